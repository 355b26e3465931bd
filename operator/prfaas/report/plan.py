"""How a plan is shown: a Table-6-style terminal table and the stable JSON shape."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from prfaas.model.planner import Plan, PlanResult
from prfaas.model.scenario import Scenario

TITLES = {"prfaas": "PrfaaS-PD", "homogeneous": "Homogeneous", "naive": "Naive hetero"}


def plan_json(scenario: Scenario, result: PlanResult) -> dict[str, Any]:
    """``{"plans": {"prfaas": P, "homogeneous": P, "naive": P}, ...}`` (see the README)."""

    def one(plan: Plan) -> dict[str, Any]:
        return {
            "throughput_rps": plan.throughput_rps,
            "threshold_tokens": plan.threshold_tokens,
            "offload_fraction": plan.offload_fraction,
            "n_prfaas": plan.n_prfaas,
            "n_prefill": plan.n_prefill,
            "n_decode": plan.n_decode,
            "egress_gbps": plan.egress_gbps,
            "stages": plan.stages(),
            "l_long_tokens": plan.l_long,
            "l_short_tokens": plan.l_short,
            "prfaas_compute_rps": plan.theta_prfaas_compute,
            "prfaas_egress_rps": plan.theta_prfaas_egress,
            "link_utilisation": plan.link_utilisation,
            "binding": plan.binding,
            "ratio_to_homogeneous": result.ratio(plan),
            "cost_per_hour": plan.cost_per_hour,
        }

    return {
        "scenario": {
            "model": scenario.model.name,
            "prefill_pool": scenario.prefill_pool.name,
            "pd_cluster": scenario.pd_cluster.name,
            "link_budget_gbps": scenario.link.budget_gbps,
            "service_time": scenario.planner.service_time,
        },
        "plans": {
            "prfaas": one(result.prfaas),
            "homogeneous": one(result.homogeneous),
            "naive": one(result.naive),
        },
    }


def _rps(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _tokens(value: float | None) -> str:
    return "—" if value is None else f"{value / 1000:.1f}K"


def plan_table(scenario: Scenario, result: PlanResult) -> Table:
    plans = (result.prfaas, result.homogeneous, result.naive)
    pool = scenario.prefill_pool.instance
    local = scenario.pd_cluster.instance
    table = Table(
        title=(
            f"{scenario.model.name}: {pool.accelerator} PrefillPool + {local.accelerator} PD "
            f"cluster, {scenario.link.budget_gbps:g} Gbps link"
        ),
        caption=(
            f"Instances of {local.gpus} GPUs. Service time: {scenario.planner.service_time}. "
            "Θ in req/s; Λ = min(Θ_prfaas/p, Θ_pd-p/(1−p), Θ_pd-d)."
        ),
    )
    table.add_column("")
    for plan in plans:
        table.add_column(TITLES[plan.kind], justify="right")

    def row(name: str, cells: list[str], style: str | None = None) -> None:
        table.add_row(name, *cells, style=style)

    row(
        "N_prfaas/N_p/N_d",
        [f"{p.n_prfaas or '—'}/{p.n_prefill or '—'}/{p.n_decode}" for p in plans],
    )
    row("threshold t", [_tokens(p.threshold_tokens) for p in plans])
    row("offload p", [f"{p.offload_fraction:.3f}" for p in plans])
    row("l_long", [_tokens(p.l_long if p.offload_fraction else None) for p in plans])
    row("l_short", [_tokens(p.l_short if p.offload_fraction < 1 else None) for p in plans])
    row(
        "Θ prfaas/pd-p/pd-d",
        [
            f"{_rps(p.theta_prfaas)}/{_rps(p.theta_pd_prefill)}/{_rps(p.theta_pd_decode)}"
            for p in plans
        ],
    )
    row("Λ_max (req/s)", [f"{p.throughput_rps:.2f}" for p in plans], style="bold")
    row("vs homogeneous", [f"{result.ratio(p):.2f}×" for p in plans], style="bold")
    row(
        "egress Gbps (link)",
        [
            f"{p.egress_gbps:.1f} ({100 * p.link_utilisation:.0f}%)" if p.n_prfaas else "—"
            for p in plans
        ],
    )
    row("binds", [p.binding for p in plans])
    if any(p.cost_per_hour is not None for p in plans):
        row(
            "cost/h, req/s per cost",
            [
                "—"
                if p.cost_per_hour is None
                else f"{p.cost_per_hour:.0f} / {p.throughput_rps / p.cost_per_hour:.4f}"
                for p in plans
            ],
        )
    return table


def print_plan(scenario: Scenario, result: PlanResult, console: Console) -> None:
    console.print(plan_table(scenario, result))
