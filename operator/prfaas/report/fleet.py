"""How a fleet plan is shown: terminal tables (joint plan, baselines) and the stable JSON shape."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from prfaas.model.fleet import Fleet
from prfaas.model.fleet_planner import ClusterPlan, FleetPlan, FleetResult, PoolPlan

TITLES = {"joint": "Joint", "independent": "Independent", "homogeneous": "Homogeneous"}


def _cluster_json(c: ClusterPlan) -> dict[str, Any]:
    return {
        "demand_rps": c.demand_rps,
        "throughput_rps": c.throughput_rps,
        "served_rps": c.served_rps,
        "satisfaction": c.satisfaction,
        "threshold_tokens": c.threshold_tokens,
        "offload_fraction": c.offload_fraction,
        "n_prefill": c.n_prefill,
        "n_decode": c.n_decode,
        "l_long_tokens": c.l_long,
        "l_short_tokens": c.l_short,
        "pd_prefill_rps": c.pd_prefill_rps,
        "pd_decode_rps": c.pd_decode_rps,
        "egress_gbps": c.egress_gbps,
        "limit": c.limit,
        "pools": {
            s.pool: {
                "fraction": s.fraction,
                "rate_rps": s.rate_rps,
                "instances": s.instances,
                "egress_gbps": s.egress_gbps,
                "link_budget_gbps": s.link_budget_gbps,
            }
            for s in c.shares
        },
    }


def _pool_json(p: PoolPlan) -> dict[str, Any]:
    return {
        "n_prfaas": p.n_prfaas,
        "bounds": list(p.bounds),
        "busy_instances": p.busy_instances,
        "utilisation": p.utilisation,
        "egress_gbps": p.egress_gbps,
        "egress_budget_gbps": p.egress_budget_gbps,
        "cost_per_hour": p.cost_per_hour,
    }


def plan_json_of(plan: FleetPlan) -> dict[str, Any]:
    return {
        "satisfaction": plan.satisfaction,
        "served_rps": plan.served_rps,
        "throughput_rps": plan.throughput_rps,
        "demand_rps": plan.demand_rps,
        "cost_per_hour": plan.cost_per_hour,
        "clusters": {c.name: _cluster_json(c) for c in plan.clusters},
        "pools": {p.name: _pool_json(p) for p in plan.pools},
    }


def fleet_json(fleet: Fleet, result: FleetResult) -> dict[str, Any]:
    """``{"plans": {"joint": F, "independent": F, "homogeneous": F}, ...}`` (see the README)."""
    return {
        "fleet": {
            "model": fleet.model.name,
            "objective": fleet.planner.objective,
            "pools": [p.name for p in fleet.pools],
            "clusters": [c.name for c in fleet.clusters],
        },
        "plans": {p.kind: plan_json_of(p) for p in result.plans()},
        "gain": {
            "satisfaction_vs_independent": _ratio(
                result.joint.satisfaction, result.independent.satisfaction
            ),
            "served_vs_independent": _ratio(result.joint.served_rps, result.independent.served_rps),
            "served_vs_homogeneous": _ratio(result.joint.served_rps, result.homogeneous.served_rps),
        },
        "solver": {
            "rounds": result.rounds,
            "linear_programs": result.programs,
            "seconds": result.seconds,
        },
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _summary(fleet: Fleet, result: FleetResult) -> Table:
    plans = result.plans()
    table = Table(
        title=(
            f"{fleet.model.name}: {len(fleet.pools)} PrefillPools, {len(fleet.clusters)} PD "
            f"clusters ({fleet.planner.objective})"
        ),
        caption=(
            "scale: min of Λ_i / demand_i, the largest multiple of every demand carried.\n"
            "Independent: each cluster alone on an even split of each pool it uses.\n"
            "Homogeneous: no pool; its machines + its share of the pools' count."
        ),
    )
    table.add_column("")
    for p in plans:
        table.add_column(TITLES[p.kind], justify="right")
    table.add_row("scale (min Λ/D)", *[f"{p.satisfaction:.2f}×" for p in plans], style="bold")
    table.add_row(
        "served / demand (req/s)", *[f"{p.served_rps:.2f} / {p.demand_rps:.2f}" for p in plans]
    )
    table.add_row("capacity ΣΛ (req/s)", *[f"{p.throughput_rps:.2f}" for p in plans])
    table.add_row("pool instances", *[str(sum(q.n_prfaas for q in p.pools)) for p in plans])
    table.add_row("egress Gbps", *[f"{sum(q.egress_gbps for q in p.pools):.1f}" for p in plans])
    joint = result.joint
    table.add_row(
        "joint vs this (scale)",
        *[f"{joint.satisfaction / p.satisfaction:.2f}×" if p.satisfaction else "—" for p in plans],
        style="bold",
    )
    if joint.cost_per_hour is not None:
        table.add_row(
            "cost/h", *["—" if p.cost_per_hour is None else f"{p.cost_per_hour:.0f}" for p in plans]
        )
    return table


def _clusters(result: FleetResult) -> Table:
    table = Table(
        title="Joint plan per PD cluster",
        caption="D: demand; indep.: Λ in the independent plan (req/s)",
    )
    for name in ("cluster", "D", "Λ", "scale", "t", "p", "Np/Nd", "limit", "indep."):
        table.add_column(name, justify="left" if name in ("cluster", "limit") else "right")
    for c in result.joint.clusters:
        ind = result.independent.cluster(c.name)
        table.add_row(
            c.name,
            f"{c.demand_rps:.2f}",
            f"{c.throughput_rps:.2f}",
            f"{c.satisfaction:.2f}×",
            "—" if c.threshold_tokens is None else f"{c.threshold_tokens / 1000:.1f}K",
            f"{c.offload_fraction:.2f}",
            f"{c.n_prefill}/{c.n_decode}",
            c.limit,
            f"{ind.throughput_rps:.2f}",
        )
    return table


def _routes(result: FleetResult) -> Table:
    table = Table(title="Joint plan: who offloads where")
    for name in ("cluster", "pool", "share", "req/s", "busy", "Gbps (link)"):
        table.add_column(name, justify="left" if name in ("cluster", "pool") else "right")
    for c in result.joint.clusters:
        for s in c.shares:
            table.add_row(
                c.name,
                s.pool,
                f"{100 * s.fraction:.0f}%",
                f"{s.rate_rps:.2f}",
                f"{s.instances:.2f}",
                f"{s.egress_gbps:.1f} ({s.link_budget_gbps:g})",
            )
    return table


def _pools(result: FleetResult) -> Table:
    table = Table(title="Joint plan per PrefillPool")
    for name in ("pool", "N_prfaas (bounds)", "busy", "egress Gbps (budget)"):
        table.add_column(name, justify="left" if name == "pool" else "right")
    for p in result.joint.pools:
        budget = "∞" if p.egress_budget_gbps is None else f"{p.egress_budget_gbps:g}"
        table.add_row(
            p.name,
            f"{p.n_prfaas} ({p.bounds[0]}-{p.bounds[1]})",
            f"{p.busy_instances:.2f} ({100 * p.utilisation:.0f}%)",
            f"{p.egress_gbps:.1f} ({budget})",
        )
    return table


def print_fleet(fleet: Fleet, result: FleetResult, console: Console) -> None:
    console.print(_summary(fleet, result))
    console.print(_clusters(result))
    console.print(_routes(result))
    console.print(_pools(result))
    console.print(
        f"solved in {1000 * result.seconds:.0f} ms: {result.rounds} filling round(s), "
        f"{result.programs} linear programs"
    )
