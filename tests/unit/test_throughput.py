"""The paper's equations on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prfaas.model.throughput import (
    kv_throughput_gbps,
    lambda_max,
    split_stats,
    theta_pd_decode,
    theta_pd_prefill,
    theta_prfaas_compute,
    theta_prfaas_egress,
)
from prfaas.model.workload import LengthGrid


def arr(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def test_eq1_kv_throughput_matches_table5() -> None:
    # Table 5: 701.3 MiB in 1.84 s is 3.19 Gbps (MiB = 8·2^20 bit, Gbps = 1e9 bit/s)
    assert kv_throughput_gbps(arr(701.3), arr(1.84))[0] == pytest.approx(3.197, abs=1e-3)
    assert kv_throughput_gbps(arr(2316.3), arr(7.40))[0] == pytest.approx(2.626, abs=1e-3)


def test_eq3_prfaas_is_min_of_compute_and_egress() -> None:
    compute = theta_prfaas_compute(arr(4.0), arr(2.5))
    assert compute[0] == pytest.approx(1.6)
    # 10 Gbps, 1000 MiB per request: 1e10 / (1000 · 8 · 2^20) = 1.1921 req/s
    egress = theta_prfaas_egress(10.0, arr(1000.0))
    assert egress[0] == pytest.approx(1e10 / (1000 * 8 * 2**20))
    assert min(compute[0], egress[0]) == pytest.approx(1.1921, abs=1e-4)


def test_eq4_eq5_local_stages() -> None:
    assert theta_pd_prefill(arr(3.0), arr(1.5))[0] == pytest.approx(2.0)
    # Table 6 decode: 5 instances · 20 / (0.025 s · 1024 tokens) = 3.906 req/s
    assert theta_pd_decode(arr(5.0), 20, 0.025, 1024)[0] == pytest.approx(3.90625)
    assert theta_pd_decode(arr(8.0), 20, 0.025, 1024)[0] == pytest.approx(6.25)


def test_eq6_lambda_is_the_slowest_stage_after_the_split() -> None:
    # Table 6's PrfaaS point: 1.61/0.496 = 3.246, 1.64/0.504 = 3.254, decode 3.91
    lam = lambda_max(arr(1.61), arr(1.64), arr(3.91), arr(0.496))
    assert lam[0] == pytest.approx(1.61 / 0.496)
    # nothing offloaded: the pool does not bound; everything offloaded: PD-P does not
    assert lambda_max(arr(0.0), arr(2.11), arr(2.34), arr(0.0))[0] == pytest.approx(2.11)
    assert lambda_max(arr(2.45), arr(0.0), arr(6.25), arr(1.0))[0] == pytest.approx(2.45)
    # decode binds
    assert lambda_max(arr(10.0), arr(10.0), arr(1.0), arr(0.5))[0] == pytest.approx(1.0)


def test_split_stats_two_point_distribution() -> None:
    grid = LengthGrid(arr(1000.0, 3000.0), arr(0.5, 0.5))

    def square(l: np.ndarray) -> np.ndarray:
        return (l / 1000) ** 2

    def kv(l: np.ndarray) -> np.ndarray:
        return 100 + l / 10

    stats = split_stats(grid, arr(0.0, 2000.0, 3000.0), square, square, kv)
    assert list(stats.p) == [1.0, 0.5, 0.0]
    assert stats.l_long[1] == 3000 and stats.l_short[1] == 1000
    assert stats.pool_seconds[1] == pytest.approx(9.0)
    assert stats.local_seconds[1] == pytest.approx(1.0)
    assert stats.kv_mib[1] == pytest.approx(400.0)
    assert math.isnan(stats.l_long[2]) and math.isnan(stats.l_short[0])
    # subset mean vs time at the mean length: (1 + 9)/2 = 5 vs 2² = 4 (Jensen)
    assert stats.pool_seconds[0] == pytest.approx(5.0)
    assert stats.all_local_seconds == pytest.approx(5.0)
    at_mean = split_stats(grid, arr(0.0), square, square, kv, "at_mean")
    assert at_mean.pool_seconds[0] == pytest.approx(4.0)
    assert at_mean.all_local_seconds == pytest.approx(4.0)
