"""The router's ``/metrics`` (stable ``prfaas_router_`` prefix). The operator's default
Prometheus queries read the metrics named in ``prfaas.metric_names``; dashboards read the rest."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Literal

import prometheus_client
from prometheus_client import CollectorRegistry, Gauge, multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from prfaas import metric_names as names
from prfaas.model.workload import LENGTH_BUCKETS
from prfaas.router import fastmetrics

_LENGTHS = [float(b) for b in LENGTH_BUCKETS]
_DECIDE = (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.02)
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


# how ``--workers`` processes' values of a gauge combine (prometheus_client multiprocess mode):
# in-flight counts add up, health is the worst, load and utilisation the highest
_Mode = Literal["livemax", "livemin", "livesum", "livemostrecent"]
_MODES: dict[str, _Mode] = {
    "prfaas_router_link_utilisation_ratio": "livemax",
    "prfaas_router_link_in_flight_bytes": "livemax",
    "prfaas_router_link_up": "livemin",
    "prfaas_router_bandwidth_abundant": "livemin",
    "prfaas_router_threshold_tokens": "livemax",
    "prfaas_router_policy_threshold_tokens": "livemostrecent",
    "prfaas_router_policy_version": "livemax",
    "prfaas_router_engine_waiting": "livemax",
    "prfaas_router_engine_up": "livemin",
    "prfaas_router_engine_in_flight": "livesum",
    "prfaas_router_engine_draining": "livemax",
    "prfaas_router_requests_in_flight": "livesum",
    "prfaas_router_endpoints_refused": "livemax",
}


def _gauge(
    name: str, doc: str, labels: Sequence[str] = (), registry: CollectorRegistry | None = None
) -> Gauge:
    return Gauge(name, doc, labels, registry=registry, multiprocess_mode=_MODES[name])


class _View(Collector):
    """The series of ``inner``, each with the labels ``extra`` added (the PDCluster the router
    serves); with ``live``, without the gauges whose ``endpoint`` or ``pool`` label names an
    engine or pool that ``live()`` does not have (any more)."""

    def __init__(
        self,
        inner: CollectorRegistry,
        extra: Mapping[str, str],
        live: Callable[[], Mapping[str, Collection[str]]] | None = None,
    ) -> None:
        self.inner, self.extra, self.live = inner, dict(extra), live

    def collect(self) -> Iterator[Metric]:
        live = self.live() if self.live is not None else {}
        for family in self.inner.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            gauge = family.type == "gauge"
            for s in family.samples:
                if gauge and any(k in s.labels and s.labels[k] not in vs for k, vs in live.items()):
                    continue
                labels = {**s.labels, **self.extra}
                out.add_sample(s.name, labels, s.value, s.timestamp, s.exemplar)
            yield out


class RouterMetrics:
    """The router's metrics; under ``--workers`` (prometheus_client's multiprocess mode) every
    worker's values, combined per gauge as ``_MODES`` says. ``pdcluster`` ("namespace/name"):
    every series carries ``pdcluster="<it>"``, so that the operator's default queries select
    this cluster's traffic in a shared Prometheus."""

    def __init__(self, pdcluster: str | None = None) -> None:
        self.registry = r = CollectorRegistry()
        # counters and histograms: lock-free in one process; in the workers' files under them
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        mp = self.multiprocess
        Counter = prometheus_client.Counter if mp else fastmetrics.Counter  # noqa: N806
        Histogram = prometheus_client.Histogram if mp else fastmetrics.Histogram  # noqa: N806
        self.requests = Counter(names.ROUTER_REQUESTS, "routed requests by prefill target "
                                "and reason", ["target", "reason"], registry=r)  # fmt: skip
        self.decisions = Counter("prfaas_router_decisions", "decision-only API answers",
                                 ["target", "reason"], registry=r)  # fmt: skip
        self.uncached = Histogram(names.ROUTER_UNCACHED_TOKENS, "uncached prompt tokens of "
                                  "routed requests (what the operator plans from)",
                                  buckets=_LENGTHS, registry=r)  # fmt: skip
        self.output = Histogram(names.ROUTER_OUTPUT_TOKENS, "requested output tokens",
                                buckets=(16, 64, 256, 1024, 4096, 16384), registry=r)  # fmt: skip
        self.link_bytes = Counter(names.ROUTER_LINK_BYTES, "nominal KV bytes this router sent "
                                  "over each pool's link", ["pool"], registry=r)  # fmt: skip
        self.link_utilisation = _gauge("prfaas_router_link_utilisation_ratio", "recent egress "
                                      "/ usable bandwidth", ["pool"], registry=r)  # fmt: skip
        self.link_in_flight = _gauge("prfaas_router_link_in_flight_bytes", "nominal KV bytes sent "
                                    "and not yet at decode", ["pool"], registry=r)  # fmt: skip
        self.link_up = _gauge("prfaas_router_link_up", "1 unless KV transfers over the link "
                             "failed recently", ["pool"], registry=r)  # fmt: skip
        self.mode = _gauge("prfaas_router_bandwidth_abundant", "1 abundant, 0 scarce (§3.4.3)",
                          ["pool"], registry=r)  # fmt: skip
        self.threshold = _gauge("prfaas_router_threshold_tokens", "effective threshold t_eff "
                               "(-1: never offload)", ["pool"], registry=r)  # fmt: skip
        self.policy_threshold = _gauge("prfaas_router_policy_threshold_tokens", "published t "
                                      "(-1: never offload)", registry=r)  # fmt: skip
        self.policy_version = _gauge("prfaas_router_policy_version", "version of the policy "
                                    "running", registry=r)  # fmt: skip
        self.ttft = Histogram("prfaas_router_ttft_seconds", "arrival to first byte of the "
                              "answer", buckets=_LATENCY, registry=r)  # fmt: skip
        self.phase = Histogram("prfaas_router_phase_seconds", "time per phase", ["phase"],
                               buckets=_LATENCY, registry=r)  # fmt: skip
        self.decide_seconds = Histogram("prfaas_router_decide_seconds", "token count, prefix "
                                        "lookup and decision", registry=r,
                                        buckets=_DECIDE)  # fmt: skip
        self.fallbacks = Counter("prfaas_router_fallbacks", "requests re-routed after a failure "
                                 "(pool, local, link, kv, timeout)", ["cause"],
                                 registry=r)  # fmt: skip
        self.decode_retries = Counter("prfaas_router_decode_retries", "decode attempts that "
                                      "failed before the answer's first byte and were retried "
                                      "on another engine", registry=r)  # fmt: skip
        self.broken_streams = Counter("prfaas_router_broken_streams", "streams cut after their "
                                      "first byte reached the client, ended with an error event "
                                      "and no [DONE]", registry=r)  # fmt: skip
        self.timeouts = Counter("prfaas_router_timeouts", "phases over their bound (prefill, "
                                "first_byte: KV arrival and first token)", ["phase"],
                                registry=r)  # fmt: skip
        self.link_probes = Counter("prfaas_router_link_probes", "probes of failed links",
                                   ["pool", "result"], registry=r)  # fmt: skip
        self.errors = Counter("prfaas_router_errors", "requests answered with an error",
                              ["code"], registry=r)  # fmt: skip
        self.in_flight = _gauge("prfaas_router_requests_in_flight", "client requests in flight "
                               "here (at most --max-concurrency)", registry=r)  # fmt: skip
        self.refused = _gauge("prfaas_router_endpoints_refused", "endpoints of the policy "
                             "dropped, by reason (invalid: not an http(s) URL; not_allowed: "
                             "outside --allow-endpoint)", ["reason"], registry=r)  # fmt: skip
        self.approximate = Counter("prfaas_router_approximate_token_counts", "text prompts "
                                   "counted without a tokenizer", registry=r)  # fmt: skip
        self.engine_waiting = _gauge("prfaas_router_engine_waiting", "scraped queue depth",
                                    ["endpoint"], registry=r)  # fmt: skip
        self.engine_up = _gauge("prfaas_router_engine_up", "1 if the last scrape succeeded",
                               ["endpoint"], registry=r)  # fmt: skip
        self.engine_in_flight = _gauge("prfaas_router_engine_in_flight", "requests this router "
                                      "has in flight there", ["endpoint"], registry=r)  # fmt: skip
        self.engine_draining = _gauge("prfaas_router_engine_draining", "1 while an engine that "
                                     "left the policy finishes its requests", ["endpoint"],
                                     registry=r)  # fmt: skip
        self.endpoints: set[str] = set()  # the endpoint label values exported now
        self.pools: set[str] = set()  # the pool label values of the gauges exported now
        self.pdcluster = pdcluster
        self._extra = {names.PDCLUSTER_LABEL: pdcluster} if pdcluster else {}
        if pdcluster:  # the exposed registry labels every series; the metrics live in ``r``
            self.registry = CollectorRegistry()
            self.registry.register(_View(r, self._extra))

    def exposed(self) -> CollectorRegistry:
        """What ``/metrics`` shows: this process's registry, or all workers' together. Workers
        write their values to files that cannot forget a series, so there the series of
        engines and pools that left (not in ``endpoints`` / ``pools``, which telemetry keeps) are
        filtered out of the gauges."""
        if not self.multiprocess:
            return self.registry
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        view = CollectorRegistry()
        view.register(_View(merged, self._extra, lambda: {"endpoint": self.endpoints,
                                                           "pool": self.pools}))  # fmt: skip
        return view

    def pool_gauges(self) -> tuple[Gauge, ...]:
        """The gauges labelled by pool: what a pool that left the policy must not keep."""
        return (self.link_utilisation, self.link_in_flight, self.link_up, self.mode,
                self.threshold)  # fmt: skip
