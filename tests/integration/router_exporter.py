"""An exporter with the router's metric names, driven by tests (no router needed)."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from prfaas.model.scenario import case_study
from prfaas.model.workload import LENGTH_BUCKETS
from prfaas_dev.ports import free_port


class RouterLikeExporter:
    """The metric names the router exposes (and the operator's default queries read)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("prfaas_router_requests", "requests", registry=self.registry)
        self.uncached = Histogram(
            "prfaas_router_uncached_tokens",
            "uncached prompt tokens",
            buckets=[float(b) for b in LENGTH_BUCKETS],
            registry=self.registry,
        )
        self.output = Histogram(
            "prfaas_router_output_tokens",
            "output tokens",
            buckets=[256, 1024, 4096],
            registry=self.registry,
        )
        self.link = Counter(
            "prfaas_router_link_bytes", "KV bytes sent", ["pool"], registry=self.registry
        )
        self.link.labels(pool="h200-pool")  # labelled series exist from the start
        self.port = free_port()
        self.server, self.thread = start_http_server(
            self.port, addr="127.0.0.1", registry=self.registry
        )

    def drive(self, lengths: np.ndarray, output: int = 1024) -> None:
        for length in lengths:
            self.requests.inc()
            self.uncached.observe(float(length))
            self.output.observe(output)
            self.link.labels(pool="h200-pool").inc(length * 17_000)

    def close(self) -> None:
        self.server.shutdown()


def case_study_lengths(n: int, seed: int = 1) -> np.ndarray:
    grid = case_study().workload.input_length.grid()
    return np.random.default_rng(seed).choice(grid.lengths, size=n, p=grid.weights)
