"""How a fleet simulation is shown: per plan and cluster, and the sustainable scales."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from prfaas.sim.fleet_engine import Fault
from prfaas.sim.fleet_run import FleetSimReport, FleetSustainable, run_json


def _f(value: float | None, fmt: str = ".2f") -> str:
    return "—" if value is None else format(value, fmt)


def fleet_sim_json(report: FleetSimReport) -> dict[str, Any]:
    o = report.options
    return {
        "plans": {name: run_json(run) for name, run in report.runs.items()},
        "planned_scale": {p.kind: p.satisfaction for p in report.result.plans()},
        "run": {
            "scale": o.scale,
            "requests": o.requests,
            "seed": o.seed,
            "slo_ttft_s": o.slo_ttft_s,
            "faults": [_fault_json(f) for f in o.faults],
            "wall_s": report.wall_s,
        },
    }


def _fault_json(f: Fault) -> dict[str, Any]:
    end = None if f.end_s == float("inf") else f.end_s
    return {"kind": f.kind, "target": f.target, "start_s": f.start_s, "end_s": end}


def _fault_text(f: Fault) -> str:
    end = "" if f.end_s == float("inf") else f"{f.end_s:g}"
    return f"{f.kind} {f.target} down {f.start_s:g}-{end} s"


def print_fleet_sim(report: FleetSimReport, console: Console) -> None:
    o = report.options
    faults = ", ".join(_fault_text(f) for f in o.faults)
    console.print(
        f"[bold]{o.requests:,} requests[/] over {len(report.fleet.clusters)} PD clusters at "
        f"{o.scale:g}× their demand, seed {o.seed}, SLO P90 TTFT {o.slo_ttft_s:g} s"
        + (f"; {faults}" if faults else "")
        + f"; simulated in {report.wall_s:.1f} s"
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("plan", "cluster", "offered", "done/s", "TTFT P50", "P90", "offload", "dropped"):
        table.add_column(name, justify="left" if name in ("plan", "cluster") else "right")
    for name, run in report.runs.items():
        for k, c in enumerate(run.clusters):
            table.add_row(
                name if k == 0 else "",
                c.name,
                f"{c.offered_rps:.2f}",
                f"{c.throughput_rps:.2f}",
                _f(c.ttft_p50_s, ".1f"),
                _f(c.ttft_p90_s, ".1f"),
                f"{c.offload_fraction:.2f}",
                str(c.dropped),
            )
        table.add_row(
            "", "[bold]all[/]", "", f"{run.throughput_rps:.2f}", "", f"{run.worst_p90_s:.1f}",
            "", "", end_section=True,
        )  # fmt: skip
    console.print(table)
    for name, run in report.runs.items():
        missed = [c.name for c in run.clusters if not run.meets_in(c, o.slo_ttft_s)]
        verdict = f"misses the SLO in {', '.join(missed)}" if missed else "meets the SLO everywhere"
        console.print(f"{name}: {verdict}; {run.rerouted} prefills re-routed by faults")
    links = Table(title="mean Gbps per link", box=box.SIMPLE_HEAD, pad_edge=False)
    names = sorted({k for run in report.runs.values() for k in run.link_gbps})
    if names:
        links.add_column("link")
        for name in report.runs:
            links.add_column(name, justify="right")
        for link in names:
            links.add_row(
                link, *[_f(run.link_gbps.get(link), ".1f") for run in report.runs.values()]
            )
        console.print(links)


def fleet_sustainable_json(found: list[FleetSustainable], slo: float) -> dict[str, Any]:
    return {
        "slo_ttft_s": slo,
        "plans": {
            s.plan: {
                "scale": s.scale,
                "planned_scale": s.planned_scale,
                "simulated_vs_planned": s.scale / s.planned_scale if s.planned_scale else None,
                "worst_ttft_p90_s": s.worst_p90_s,
                "runs": s.runs,
            }
            for s in found
        },
    }


def print_fleet_sustainable(found: list[FleetSustainable], slo: float, console: Console) -> None:
    table = Table(
        title=f"Largest multiple of every demand with P90 TTFT ≤ {slo:g} s in every cluster",
        box=box.SIMPLE_HEAD,
    )
    for name in ("plan", "simulated", "planner", "sim/planner", f"vs {found[0].plan}"):
        table.add_column(name, justify="left" if name == "plan" else "right")
    base = found[0].scale
    for s in found:
        table.add_row(
            s.plan,
            f"{s.scale:.3f}×",
            f"{s.planned_scale:.3f}×",
            f"{s.scale / s.planned_scale:.2f}" if s.planned_scale else "—",
            f"{s.scale / base:.2f}" if base else "—",
        )
    console.print(table)
