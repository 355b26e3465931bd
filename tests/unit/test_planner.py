"""The planner on the paper's case study (Table 6) and on variants that stress its bounds."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from prfaas.model.planner import PlanError, plan
from prfaas.model.scenario import Scenario, case_study


@pytest.fixture(scope="module")
def result():  # type: ignore[no-untyped-def]
    return plan(case_study())


def test_prfaas_plan_reproduces_table6(result) -> None:  # type: ignore[no-untyped-def]
    p = result.prfaas
    assert p.throughput_rps == pytest.approx(3.24, rel=0.03)
    assert (p.n_prfaas, p.n_prefill, p.n_decode) == (4, 3, 5)
    assert 19_000 <= p.threshold_tokens <= 19_800
    assert 0.48 <= p.offload_fraction <= 0.51
    assert 11 <= p.egress_gbps <= 14
    assert p.theta_prfaas == pytest.approx(1.61, rel=0.03)
    assert p.theta_pd_prefill == pytest.approx(1.64, rel=0.03)
    assert p.theta_pd_decode == pytest.approx(3.91, rel=0.01)
    assert p.l_long == pytest.approx(45_000, rel=0.03)
    assert p.binding == "prfaas-compute"


def test_baselines_reproduce_table6(result) -> None:  # type: ignore[no-untyped-def]
    h, n = result.homogeneous, result.naive
    assert h.throughput_rps == pytest.approx(2.11, rel=0.03)
    assert (h.n_prefill, h.n_decode) == (9, 3)
    assert n.throughput_rps == pytest.approx(2.45, rel=0.03)
    assert (n.n_prfaas, n.n_prefill, n.n_decode) == (4, 0, 8)
    assert result.ratio(result.prfaas) == pytest.approx(1.54, rel=0.03)
    assert result.prfaas.throughput_rps / n.throughput_rps == pytest.approx(1.32, rel=0.03)


def test_eq7_prefill_bounds_cross_at_the_optimum(result) -> None:  # type: ignore[no-untyped-def]
    p = result.prfaas
    pool = p.theta_prfaas / p.offload_fraction
    local = p.theta_pd_prefill / (1 - p.offload_fraction)
    assert pool == pytest.approx(local, rel=0.02)


def test_prefill_bounds_are_monotone_in_t(result) -> None:  # type: ignore[no-untyped-def]
    # Raising t sends fewer, longer requests to the pool: Θ_prfaas/p rises; Θ_pd-p/(1−p) falls.
    s = result.surface
    k = int(np.flatnonzero(s.n_prfaas == 4)[0])
    i = int(np.flatnonzero(s.n_prefill == 3)[0])
    both = np.isfinite(s.pool_bound[k]) & np.isfinite(s.local_bound[i])
    pool, local = s.pool_bound[k][both], s.local_bound[i][both]
    assert both.sum() > 1000
    assert np.all(np.diff(pool) >= -1e-9)
    assert np.all(np.diff(local) <= 1e-9)


def test_the_chosen_plan_is_the_grid_maximum(result) -> None:  # type: ignore[no-untyped-def]
    assert result.prfaas.throughput_rps == pytest.approx(float(result.surface.throughput.max()))
    # PrfaaS can always mimic "no offload" or "offload all", so it is never below either
    assert result.prfaas.throughput_rps >= result.naive.throughput_rps


def test_pool_size_search_stays_in_bounds(scenario_with: Callable[..., Scenario]) -> None:
    sc = scenario_with(("planner", "poolInstances"), {"min": 1, "max": 8})
    r = plan(sc)
    assert 1 <= r.prfaas.n_prfaas <= 8
    assert r.prfaas.n_prefill + r.prfaas.n_decode == 8
    assert r.prfaas.throughput_rps > plan(case_study()).prfaas.throughput_rps
    assert r.surface.throughput.shape == (8, 7, len(r.surface.thresholds))


def test_cost_budget_limits_the_pool(scenario_with: Callable[..., Scenario]) -> None:
    sc = scenario_with(
        ("planner", "poolInstances"),
        {"min": 1, "max": 8},
        ("prefillPool", "instance", "pricePerGpuHour"),
        2.0,
        ("pdCluster", "instance", "pricePerGpuHour"),
        1.0,
        ("planner", "costBudgetPerHour"),
        8 * 8 * 1.0 + 3 * 8 * 2.0,  # local + 3 pool instances
    )
    r = plan(sc)
    assert r.prfaas.n_prfaas == 3
    assert r.prfaas.cost_per_hour == pytest.approx(112.0)


def test_a_narrow_link_binds_and_is_respected(scenario_with: Callable[..., Scenario]) -> None:
    sc = scenario_with(("link", "capacityGbps"), 5.0)
    r = plan(sc)
    for p in (r.prfaas, r.naive):
        assert p.egress_gbps <= 5.0 * (1 + 1e-9)
    assert r.naive.binding == "prfaas-egress"
    # a scarce link pushes t up: only long, KV-light-per-second requests are worth shipping
    assert r.prfaas.threshold_tokens > plan(case_study()).prfaas.threshold_tokens


def test_usable_fraction_scales_the_budget(scenario_with: Callable[..., Scenario]) -> None:
    sc = scenario_with(("link", "capacityGbps"), 50.0, ("link", "usableFraction"), 0.1)
    r = plan(sc)
    assert r.prfaas.link_budget_gbps == pytest.approx(5.0)
    assert r.prfaas.egress_gbps <= 5.0 * (1 + 1e-9)


def test_split_bounds_are_honoured(scenario_with: Callable[..., Scenario]) -> None:
    sc = scenario_with(("pdCluster", "minPrefill"), 4)
    r = plan(sc)
    assert r.prfaas.n_prefill >= 4
    sc = scenario_with(("pdCluster", "minDecode"), 6)
    assert plan(sc).prfaas.n_decode >= 6


def test_a_link_that_cannot_carry_one_request_is_refused(
    scenario_with: Callable[..., Scenario],
) -> None:
    sc = scenario_with(("link", "capacityGbps"), 0.001)
    with pytest.raises(PlanError, match="cannot carry even one request"):
        plan(sc)


def test_at_mean_convention_is_available(scenario_with: Callable[..., Scenario]) -> None:
    r = plan(scenario_with(("planner", "serviceTime"), "at_mean"))
    # T(E[L]) < E[T(L)] for convex T: the literal reading over-states PD-P throughput
    assert r.homogeneous.throughput_rps > plan(case_study()).homogeneous.throughput_rps * 0.99
    assert r.prfaas.throughput_rps > 0


def test_histogram_workload_plans_like_the_lognormal(
    scenario_with: Callable[..., Scenario],
) -> None:
    # Prometheus-style cumulative buckets sampled from the case-study distribution
    grid = case_study().workload.input_length.grid()
    edges = [
        256,
        512,
        1024,
        2048,
        4096,
        8192,
        12288,
        16384,
        20480,
        24576,
        32768,
        49152,
        65536,
        98304,
    ]
    cum = np.concatenate(([0.0], np.cumsum(grid.weights)))
    buckets = [
        {"le": e, "count": round(10_000 * float(cum[np.searchsorted(grid.lengths, e, "right")]))}
        for e in edges
    ] + [{"le": "+Inf", "count": 10_000}]
    sc = scenario_with(
        ("workload", "inputLength"),
        {"histogram": {"min": 128, "max": 131072, "buckets": buckets}},
    )
    r = plan(sc)
    assert r.prfaas.throughput_rps == pytest.approx(3.24, rel=0.05)
    assert 16_000 <= r.prfaas.threshold_tokens <= 23_000


def test_fixed_threshold_is_kept(scenario_with: Callable[..., Scenario]) -> None:
    r = plan(scenario_with(("planner", "fixedThresholdTokens"), 30_000))
    assert r.prfaas.threshold_tokens == 30_000
    assert r.prfaas.throughput_rps < plan(case_study()).prfaas.throughput_rps
