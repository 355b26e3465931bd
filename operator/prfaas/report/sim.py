"""How a simulation is shown: a terminal table per policy and the stable JSON shape."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from prfaas.sim.capacity import Sustainable
from prfaas.sim.run import SimReport
from prfaas.sim.stats import PolicyResult

TITLES = {
    "homogeneous": "Homogeneous PD",
    "naive": "Naive hetero",
    "prfaas_static": "PrfaaS static t",
    "prfaas": "PrfaaS dual-timescale",
}


def _series(r: PolicyResult) -> dict[str, Any]:
    s = r.series
    return {
        "bucket_s": s.bucket_s,
        "egress_gbps": s.egress_gbps,
        "offload_fraction": s.offload_fraction,
        "threshold_tokens": s.threshold_tokens,
        "capacity_gbps": s.capacity_gbps,
    }


def sim_json(report: SimReport) -> dict[str, Any]:
    """``{"policies": {name: S}, "run": {...}}``; S holds the summary and ``series``."""
    o = report.options
    return {
        "policies": {
            name: {**r.summary, "series": _series(r)} for name, r in report.results.items()
        },
        "run": {
            "rate_rps": report.rate_rps,
            "requests": report.requests,
            "arrivals": o.arrivals,
            "trace": str(o.trace) if o.trace else None,
            "seed": o.seed,
            "drain_s": o.drain_s,
            "link_schedule": [list(p) for p in o.link.points],
            "slo_ttft_s": o.slo.ttft_s,
            "slo_tpot_s": o.slo.tpot_s,
            "scenario_link_gbps": report.scenario.link.capacity_gbps,
            "planned_rps": {
                "homogeneous": report.plan.homogeneous.throughput_rps,
                "naive": report.plan.naive.throughput_rps,
                "prfaas": report.plan.prfaas.throughput_rps,
            },
            "wall_s": report.wall_s,
        },
    }


def _f(value: Any, fmt: str = ".2f") -> str:
    return "—" if value is None else format(value, fmt)


def print_sim(report: SimReport, console: Console) -> None:
    o = report.options
    link = ", ".join(f"{g:g} Gbps from {t:g} s" for t, g in o.link.points) or "constant"
    console.print(
        f"[bold]{report.requests:,} requests[/] at {report.rate_rps:.2f} req/s ({o.arrivals}), "
        f"link {report.scenario.link.capacity_gbps:g} Gbps ({link}), seed {o.seed}, "
        f"SLO TTFT {o.slo.ttft_s:g} s; simulated in {report.wall_s:.1f} s"
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("")
    for name in report.results:
        table.add_column(name, justify="right")
    rows: list[tuple[str, str, str]] = [
        ("N_prfaas/N_p/N_d", "", "split"),
        ("t: plan → mean", "", "t"),
        ("completed/dropped", "", "cd"),
        ("unfinished at stop", "unfinished", "d"),
        ("throughput req/s", "throughput_rps", ".2f"),
        ("goodput req/s", "goodput_rps", ".2f"),
        ("TTFT mean s", "ttft_mean_s", ".2f"),
        ("TTFT P50 s", "ttft_p50_s", ".2f"),
        ("TTFT P90 s", "ttft_p90_s", ".2f"),
        ("TTFT P99 s", "ttft_p99_s", ".2f"),
        ("TPOT ms", "tpot_mean_s", "ms"),
        ("offloaded", "offload_fraction", ".1%"),
        ("egress mean/peak Gbps", "", "egress"),
        ("versions/role moves", "", "vr"),
    ]
    for label, key, fmt in rows:
        cells = []
        for r in report.results.values():
            s = r.summary
            if fmt == "split":
                cells.append(f"{s['n_prfaas'] or '—'}/{s['n_prefill'] or '—'}/{s['n_decode']}")
            elif fmt == "t":
                t, mean = s["threshold_tokens"], s["threshold_mean_tokens"]
                if t is None:
                    cells.append("—")
                elif t == 0:
                    cells.append("0 (all)")
                else:
                    cells.append(f"{t / 1000:.1f}K → {(mean or 0) / 1000:.1f}K")
            elif fmt == "cd":
                cells.append(f"{s['completed']:,}/{s['dropped']:,}")
            elif fmt == "egress":
                cells.append(f"{s['egress_gbps_mean']:.1f}/{s['egress_gbps_peak']:.1f}")
            elif fmt == "vr":
                cells.append(f"{s['policy_versions']}/{s['role_changes']}")
            elif fmt == "ms":
                v = s[key]
                cells.append("—" if v is None else f"{v * 1000:.0f}")
            elif fmt == "d":
                cells.append(f"{s[key]:,}")
            else:
                cells.append(_f(s[key], fmt))
        table.add_row(label, *cells)
    console.print(table)
    base = report.results.get("homogeneous")
    if base is not None and base.summary["ttft_p90_s"]:
        for name, r in report.results.items():
            p90 = r.summary["ttft_p90_s"]
            if name != "homogeneous" and p90 is not None:
                change = p90 / base.summary["ttft_p90_s"] - 1
                console.print(f"P90 TTFT {name} vs homogeneous: {change:+.0%}")


def sustainable_json(found: list[Sustainable], slo_ttft_s: float) -> dict[str, Any]:
    by = {s.policy: s for s in found}
    base = by.get("homogeneous")
    return {
        "slo_p90_ttft_s": slo_ttft_s,
        "sustainable": {s.policy: asdict(s) for s in found},
        "ratio_to_homogeneous": {
            s.policy: s.rate_rps / base.rate_rps for s in found if base and base.rate_rps > 0
        },
    }


def print_sustainable(found: list[Sustainable], slo_ttft_s: float, console: Console) -> None:
    console.print(f"Highest sustainable rate: the largest whose P90 TTFT ≤ {slo_ttft_s:g} s")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("", "req/s", "P90 TTFT s", "planner Λ_max", "vs homogeneous"):
        table.add_column(col, justify="right" if col else "left")
    base = next((s for s in found if s.policy == "homogeneous"), None)
    for s in found:
        ratio = f"{s.rate_rps / base.rate_rps:.2f}×" if base and base.rate_rps > 0 else "—"
        table.add_row(
            s.policy,
            f"{s.rate_rps:.2f}",
            f"{s.p90_ttft_s:.1f}",
            f"{s.planned_rps:.2f}",
            ratio,
        )
    console.print(table)
