"""The router's own metrics (``RouterMetrics``) on a loopback port, driven by tests.

No router process is needed, and nothing is re-declared: the series Prometheus scrapes are
the router's, so renaming one in ``prfaas.router.metrics`` breaks the tests that read it.
"""

from __future__ import annotations

import numpy as np
from prometheus_client import start_http_server

from prfaas.model.scenario import case_study
from prfaas.router.metrics import RouterMetrics
from prfaas.routing.decide import Reason
from prfaas_dev.ports import free_port

POOL = "h200-pool"


class RouterMetricsExporter:
    """Records requests as the router does for each one it routes (see ``router/server.py``)."""

    def __init__(self, pdcluster: str | None = None) -> None:
        self.metrics = m = RouterMetrics(pdcluster)
        # labelled series exist from the start, so increase() sees all of the traffic
        self.routed = m.requests.labels("pool", Reason.LONG.value)
        self.link = m.link_bytes.labels(POOL)
        self.port = free_port()
        self.server, self.thread = start_http_server(
            self.port, addr="127.0.0.1", registry=m.registry
        )

    def drive(self, lengths: np.ndarray, output: int = 1024) -> None:
        for length in lengths:
            self.routed.inc()
            self.metrics.uncached.observe(float(length))
            self.metrics.output.observe(output)
            self.link.inc(length * 17_000)

    def close(self) -> None:
        self.server.shutdown()


def case_study_lengths(n: int, seed: int = 1) -> np.ndarray:
    grid = case_study().workload.input_length.grid()
    return np.random.default_rng(seed).choice(grid.lengths, size=n, p=grid.weights)
