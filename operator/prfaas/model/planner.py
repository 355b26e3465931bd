"""The planner: exhaustive, vectorised grid search of the paper's model (§3.4.2).

PrfaaS-PD searches threshold ``t`` × local split ``N_p/N_d`` (× ``N_prfaas`` within bounds and a
cost budget). Baselines: homogeneous PD (all local instances, best split) and naive
heterogeneous (every prefill on the pool, every local instance decodes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from prfaas.model.curves import CurveError, FloatArray
from prfaas.model.scenario import Scenario
from prfaas.model.throughput import (
    SplitStats,
    lambda_max,
    prefill_bound,
    split_stats,
    theta_pd_decode,
    theta_pd_prefill,
    theta_prfaas_compute,
    theta_prfaas_egress,
)
from prfaas.model.units import mib_to_gbit
from prfaas.model.workload import LengthGrid

PlanKind = Literal["prfaas", "homogeneous", "naive"]
Binding = Literal["prfaas-compute", "prfaas-egress", "pd-prefill", "pd-decode"]
_TIE = 1e-9  # relative: throughputs this close are equal; then cheaper, then less egress wins


class PlanError(ValueError):
    """The scenario cannot be planned (e.g. a link that cannot carry even one request)."""


@dataclass(frozen=True)
class Plan:
    kind: PlanKind
    throughput_rps: float  # Λ_max
    threshold_tokens: int | None
    offload_fraction: float  # p
    l_long: float | None
    l_short: float | None
    n_prfaas: int
    n_prefill: int
    n_decode: int
    theta_prfaas: float | None
    theta_pd_prefill: float | None
    theta_pd_decode: float
    theta_prfaas_compute: float | None
    theta_prfaas_egress: float | None
    egress_gbps: float  # KVCache leaving the pool at Λ_max
    link_budget_gbps: float
    binding: Binding
    cost_per_hour: float | None

    @property
    def link_utilisation(self) -> float:
        return self.egress_gbps / self.link_budget_gbps if self.link_budget_gbps else 0.0

    def stages(self) -> dict[str, float | None]:
        return {
            "prfaas": self.theta_prfaas,
            "pd_prefill": self.theta_pd_prefill,
            "pd_decode": self.theta_pd_decode,
        }


@dataclass(frozen=True)
class Surface:
    """Λ_max over the whole grid, axes (N_prfaas, N_p, t), for plots and inspection."""

    n_prfaas: FloatArray
    n_prefill: FloatArray
    thresholds: FloatArray
    throughput: FloatArray
    stats: SplitStats
    pool_bound: FloatArray  # Θ_prfaas / p, same axes
    local_bound: FloatArray  # Θ_pd-p / (1 − p), axes (N_p, t)
    decode: FloatArray  # Θ_pd-d, axis N_p


@dataclass(frozen=True)
class PlanResult:
    prfaas: Plan
    homogeneous: Plan
    naive: Plan
    surface: Surface = field(repr=False)

    def ratio(self, plan: Plan) -> float:
        base = self.homogeneous.throughput_rps
        return plan.throughput_rps / base if base > 0 else math.inf


@dataclass(frozen=True)
class _Context:
    scenario: Scenario
    grid: LengthGrid
    stats: SplitStats
    all_pool_seconds: float  # E[T_pool(L)] over every request (naive)
    all_kv_mib: float
    all_local_seconds: float  # E[T_local(L)] over every request (homogeneous)
    decode_rate: float  # Θ_pd-d of one instance


def _context(scenario: Scenario) -> _Context:
    grid = scenario.workload.input_length.grid()
    top = grid.max
    try:
        pool_curve = scenario.prefill_pool.instance.prefill.curve(top)
    except CurveError as exc:
        raise PlanError(f"prefillPool.instance.prefill: {exc}") from None
    try:
        local_curve = scenario.pd_cluster.instance.prefill.curve(top)
    except CurveError as exc:
        raise PlanError(f"pdCluster.instance.prefill: {exc}") from None
    try:
        kv_curve = scenario.model.kv_cache.curve(top)
    except CurveError as exc:
        raise PlanError(f"model.kvCache: {exc}") from None
    step = scenario.planner.threshold_step_tokens
    fixed = scenario.planner.fixed_threshold_tokens
    if fixed is not None:
        thresholds = np.array([float(fixed)])
    else:
        thresholds = np.arange(0.0, math.ceil(top / step) * step + step, step)
    service = scenario.planner.service_time
    stats = split_stats(grid, thresholds, pool_curve, local_curve, kv_curve, service)
    decode = scenario.pd_cluster.instance.decode
    assert decode is not None  # PDSpec guarantees it
    _check_link(scenario, float(kv_curve(np.array([grid.min]))[0]), grid.min)
    return _Context(
        scenario=scenario,
        grid=grid,
        stats=stats,
        all_pool_seconds=stats.all_pool_seconds,
        all_kv_mib=stats.all_kv_mib,
        all_local_seconds=stats.all_local_seconds,
        decode_rate=decode.requests_per_second(scenario.workload.output_tokens),
    )


def grid_cells(scenario: Scenario) -> int:
    """Cells of the PrfaaS search: pool sizes × local splits × thresholds (what a plan costs in
    time and memory: ~0.3 s and ~100 MB per million cells on one core)."""
    settings = scenario.planner
    bounds = settings.pool_instances
    pools = (bounds.max - bounds.min + 1) if bounds else 1
    pd = scenario.pd_cluster
    splits = max(1, pd.instances - pd.min_prefill - pd.min_decode + 1)
    top = scenario.workload.input_length.max_tokens
    step = settings.threshold_step_tokens
    thresholds = 1 if settings.fixed_threshold_tokens is not None else math.ceil(top / step) + 1
    return pools * splits * thresholds


def _check_link(scenario: Scenario, kv_mib: float, tokens: float) -> None:
    budget = scenario.link.budget_gbps
    seconds = mib_to_gbit(kv_mib) / budget
    limit = scenario.planner.max_transfer_seconds
    if seconds > limit:
        raise PlanError(
            f"link: {budget:g} Gbps (capacityGbps × usableFraction) cannot carry even one "
            f"request: the KVCache of the shortest one ({tokens:.0f} tokens, {kv_mib:.1f} MiB) "
            f"takes {seconds:.0f} s, over planner.maxTransferSeconds ({limit:g} s)"
        )


def _pool_counts(scenario: Scenario) -> FloatArray:
    bounds = scenario.planner.pool_instances
    lo, hi = (bounds.min, bounds.max) if bounds else (scenario.prefill_pool.instances,) * 2
    counts = np.arange(lo, hi + 1, dtype=np.float64)
    budget = scenario.planner.cost_budget_per_hour
    if budget is not None:
        pool_price = scenario.prefill_pool.instance.price_per_hour()
        local_price = scenario.pd_cluster.instance.price_per_hour()
        if pool_price is None or local_price is None:
            raise PlanError(
                "planner.costBudgetPerHour needs pricePerGpuHour on both instance profiles"
            )
        counts = counts[counts * pool_price + scenario.pd_cluster.instances * local_price <= budget]
        if counts.size == 0:
            raise PlanError(
                f"planner.costBudgetPerHour ({budget:g}) cannot pay for the PD cluster "
                "and the smallest allowed PrefillPool"
            )
    return counts


def _cost(scenario: Scenario, n_pool: int, n_local: int) -> float | None:
    pool = scenario.prefill_pool.instance.price_per_hour()
    local = scenario.pd_cluster.instance.price_per_hour()
    if local is None or (n_pool and pool is None):
        return None
    return n_pool * (pool or 0.0) + n_local * local


def _binding(
    pool_compute: float, pool_egress: float, p: float, local: float, decode: float
) -> Binding:
    bounds: dict[Binding, float] = {
        "prfaas-compute": pool_compute / p if p > 0 else math.inf,
        "prfaas-egress": pool_egress / p if p > 0 else math.inf,
        "pd-prefill": local / (1 - p) if p < 1 else math.inf,
        "pd-decode": decode,
    }
    return min(bounds, key=lambda k: bounds[k])


def _plan_prfaas(ctx: _Context) -> tuple[Plan, Surface]:
    sc, st = ctx.scenario, ctx.stats
    pools = _pool_counts(sc)
    n_local = sc.pd_cluster.instances
    n_p = np.arange(sc.pd_cluster.min_prefill, n_local - sc.pd_cluster.min_decode + 1, dtype=float)
    budget = sc.link.budget_gbps

    compute = theta_prfaas_compute(pools[:, None], st.pool_seconds[None, :])  # (K, T)
    egress = theta_prfaas_egress(budget, st.kv_mib)  # (T,)
    theta_pool = np.minimum(compute, egress[None, :])
    theta_local = theta_pd_prefill(n_p[:, None], st.local_seconds[None, :])  # (P, T)
    decode = theta_pd_decode(n_local - n_p, 1.0, 1.0, 1.0) * ctx.decode_rate  # (P,)
    lam = lambda_max(
        theta_pool[:, None, :], theta_local[None, :, :], decode[None, :, None], st.p[None, None, :]
    )  # (K, P, T)

    best = float(lam.max())
    near = np.argwhere(lam >= best * (1 - _TIE))
    # ties: fewest pool instances, then highest threshold (least egress), then more decode
    k, i, j = min(near, key=lambda c: (c[0], -c[2], c[1]))
    p = float(st.p[j])
    plan = Plan(
        kind="prfaas",
        throughput_rps=float(lam[k, i, j]),
        threshold_tokens=int(st.thresholds[j]),
        offload_fraction=p,
        l_long=None if p == 0 else float(st.l_long[j]),
        l_short=None if p == 1 else float(st.l_short[j]),
        n_prfaas=int(pools[k]),
        n_prefill=int(n_p[i]),
        n_decode=int(n_local - n_p[i]),
        theta_prfaas=None if p == 0 else float(theta_pool[k, j]),
        theta_pd_prefill=None if p == 1 else float(theta_local[i, j]),
        theta_pd_decode=float(decode[i]),
        theta_prfaas_compute=None if p == 0 else float(compute[k, j]),
        theta_prfaas_egress=None if p == 0 else float(egress[j]),
        egress_gbps=0.0 if p == 0 else float(lam[k, i, j]) * p * mib_to_gbit(float(st.kv_mib[j])),
        link_budget_gbps=budget,
        binding=_binding(
            float(compute[k, j]),
            float(egress[j]),
            p,
            float(np.nan_to_num(theta_local[i, j])),
            float(decode[i]),
        ),
        cost_per_hour=_cost(sc, int(pools[k]), n_local),
    )
    surface = Surface(
        n_prfaas=pools,
        n_prefill=n_p,
        thresholds=st.thresholds,
        throughput=lam,
        stats=st,
        pool_bound=prefill_bound(np.nan_to_num(theta_pool, nan=0.0), st.p[None, :]),
        local_bound=prefill_bound(np.nan_to_num(theta_local, nan=0.0), 1.0 - st.p[None, :]),
        decode=decode,
    )
    return plan, surface


def _plan_homogeneous(ctx: _Context) -> Plan:
    sc = ctx.scenario
    n = sc.homogeneous_instances
    n_p = np.arange(1, n, dtype=float)
    local = n_p / ctx.all_local_seconds
    decode = (n - n_p) * ctx.decode_rate
    lam = np.minimum(local, decode)
    i = int(np.argmax(lam))
    return Plan(
        kind="homogeneous",
        throughput_rps=float(lam[i]),
        threshold_tokens=None,
        offload_fraction=0.0,
        l_long=None,
        l_short=ctx.grid.mean(),
        n_prfaas=0,
        n_prefill=int(n_p[i]),
        n_decode=int(n - n_p[i]),
        theta_prfaas=None,
        theta_pd_prefill=float(local[i]),
        theta_pd_decode=float(decode[i]),
        theta_prfaas_compute=None,
        theta_prfaas_egress=None,
        egress_gbps=0.0,
        link_budget_gbps=sc.link.budget_gbps,
        binding="pd-prefill" if local[i] <= decode[i] else "pd-decode",
        cost_per_hour=_cost(sc, 0, n),
    )


def _plan_naive(ctx: _Context) -> Plan:
    sc = ctx.scenario
    n_pool, n_local = sc.prefill_pool.instances, sc.pd_cluster.instances
    budget = sc.link.budget_gbps
    compute = n_pool / ctx.all_pool_seconds
    egress = float(theta_prfaas_egress(budget, np.array([ctx.all_kv_mib]))[0])
    theta_pool = min(compute, egress)
    decode = n_local * ctx.decode_rate
    lam = min(theta_pool, decode)
    return Plan(
        kind="naive",
        throughput_rps=lam,
        threshold_tokens=None,
        offload_fraction=1.0,
        l_long=ctx.grid.mean(),
        l_short=None,
        n_prfaas=n_pool,
        n_prefill=0,
        n_decode=n_local,
        theta_prfaas=theta_pool,
        theta_pd_prefill=None,
        theta_pd_decode=decode,
        theta_prfaas_compute=compute,
        theta_prfaas_egress=egress,
        egress_gbps=lam * mib_to_gbit(ctx.all_kv_mib),
        link_budget_gbps=budget,
        binding=_binding(compute, egress, 1.0, 0.0, decode),
        cost_per_hour=_cost(sc, n_pool, n_local),
    )


def plan(scenario: Scenario) -> PlanResult:
    """Plan PrfaaS-PD and both baselines for ``scenario``."""
    ctx = _context(scenario)
    best, surface = _plan_prfaas(ctx)
    return PlanResult(
        prfaas=best, homogeneous=_plan_homogeneous(ctx), naive=_plan_naive(ctx), surface=surface
    )
