"""Counters and histograms for one process, updated without a lock: the router's per-request
series (about ten updates a request; prometheus_client takes a lock for each increment, scans
the buckets in Python, and checks the metric's state every time — 5% of the router's CPU per
request, measured by making them no-ops). One event loop updates them and answers the scrape,
so no lock is needed. Under ``--workers`` the router uses prometheus_client's own types, whose
values live in the files its multiprocess mode sums (``metrics.RouterMetrics``)."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from itertools import accumulate

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class _Bins:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # the first bound >= it: "le"
        self.sum += amount


class _Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


class Histogram(Collector):
    """prometheus_client's ``Histogram`` as far as the router uses it: ``observe``,
    ``labels(...).observe``; the same exposition."""

    def __init__(
        self,
        name: str,
        doc: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name, self.doc, self.labelnames = name, doc, list(labelnames)
        bounds = [float(b) for b in buckets]
        self.bounds = bounds if bounds and math.isinf(bounds[-1]) else [*bounds, math.inf]
        self._children: dict[tuple[object, ...], _Bins] = {}
        self._only = None if labelnames else self.labels()
        if registry is not None:
            registry.register(self)

    def labels(self, *values: object) -> _Bins:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _Bins(self.bounds)
        return child

    def observe(self, amount: float) -> None:
        if self._only is None:
            raise ValueError(f"{self.name} has labels: observe through labels()")
        self._only.observe(amount)

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        les = [floatToGoString(b) for b in self.bounds]  # type: ignore[no-untyped-call]
        for values, c in list(self._children.items()):
            buckets = list(zip(les, accumulate(c.counts), strict=True))
            family.add_metric([str(v) for v in values], buckets, c.sum)
        yield family


class Counter(Collector):
    """prometheus_client's ``Counter`` as far as the router uses it: ``inc``,
    ``labels(...).inc``; the same exposition (``<name>_total``)."""

    def __init__(
        self,
        name: str,
        doc: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name, self.doc, self.labelnames = name, doc, list(labelnames)
        self._children: dict[tuple[object, ...], _Count] = {}
        self._only = None if labelnames else self.labels()
        if registry is not None:
            registry.register(self)

    def labels(self, *values: object) -> _Count:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _Count()
        return child

    def inc(self, amount: float = 1) -> None:
        if self._only is None:
            raise ValueError(f"{self.name} has labels: inc through labels()")
        self._only.inc(amount)

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.doc, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        for values, c in list(self._children.items()):
            family.add_metric([str(v) for v in values], c.value)
        yield family
