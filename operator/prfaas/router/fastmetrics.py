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
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

C = TypeVar("C")


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


class _Family(Collector, Generic[C]):
    """Children by label values, made on first use; unlabelled: the one child, made now (so
    that its zero series is exposed from the start, as prometheus_client does)."""

    def __init__(
        self,
        name: str,
        doc: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name, self.doc, self.labelnames = name, doc, list(labelnames)
        self._children: dict[tuple[object, ...], C] = {}
        self._only = None if labelnames else self.labels()
        if registry is not None:
            registry.register(self)

    def _child(self) -> C:
        raise NotImplementedError

    def labels(self, *values: object) -> C:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._child()
        return child

    def _one(self) -> C:
        if self._only is None:
            raise ValueError(f"{self.name} has labels: update it through labels()")
        return self._only

    def _series(self) -> list[tuple[list[str], C]]:
        return [([str(v) for v in values], c) for values, c in list(self._children.items())]


class Histogram(_Family[_Bins]):
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
        bounds = [float(b) for b in buckets]
        self.bounds = bounds if bounds and math.isinf(bounds[-1]) else [*bounds, math.inf]
        super().__init__(name, doc, labelnames, registry)

    def _child(self) -> _Bins:
        return _Bins(self.bounds)

    def observe(self, amount: float) -> None:
        self._one().observe(amount)

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        les = [floatToGoString(b) for b in self.bounds]  # type: ignore[no-untyped-call]
        for labels, c in self._series():
            family.add_metric(labels, list(zip(les, accumulate(c.counts), strict=True)), c.sum)
        yield family


class Counter(_Family[_Count]):
    """prometheus_client's ``Counter`` as far as the router uses it: ``inc``,
    ``labels(...).inc``; the same exposition (``<name>_total``)."""

    def _child(self) -> _Count:
        return _Count()

    def inc(self, amount: float = 1) -> None:
        self._one().inc(amount)

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.doc, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        for labels, c in self._series():
            family.add_metric(labels, c.value)
        yield family
