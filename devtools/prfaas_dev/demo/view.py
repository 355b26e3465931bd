"""What the demo shows while it runs, and its closing summary (rich renderables)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from prfaas_dev.demo.load import Window


@dataclass
class Snapshot:
    phase: str
    elapsed_s: float  # wall
    speedup: float
    rate: float  # offered, nominal req/s
    recent: Window | None = None
    policy_version: int | None = None
    threshold: int | None = None
    threshold_eff: float | None = None
    n_pool: str = "-"
    n_prefill: str = "-"
    n_decode: str = "-"
    signals: str = "-"
    link_gbps: float | None = None  # nominal
    link_capacity_gbps: float | None = None
    fallbacks: float = 0.0
    inflight: int = 0
    events: list[str] = field(default_factory=list)


def _f(x: float | None, fmt: str = "{:.2f}", none: str = "-") -> str:
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def render(s: Snapshot) -> Panel:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold cyan", justify="right")
    t.add_column()
    t.add_column(style="bold cyan", justify="right")
    t.add_column()
    w = s.recent
    t.add_row(
        "phase",
        s.phase,
        "time",
        f"{s.elapsed_s:.0f} s wall = {s.elapsed_s * s.speedup / 60:.1f} min of case study",
    )
    t.add_row(
        "slow loop",
        f"policy v{_f(s.policy_version, '{}')}, t = {_f(s.threshold, '{:,}')}",
        "signals",
        s.signals,
    )
    t.add_row(
        "instances",
        f"pool {s.n_pool}   PD-P {s.n_prefill}   PD-D {s.n_decode}",
        "fast loop",
        f"t_eff = {_f(s.threshold_eff, '{:,.0f}')}, fallbacks {s.fallbacks:.0f}",
    )
    link = "-"
    if s.link_gbps is not None:
        cap = s.link_capacity_gbps
        util = f" ({s.link_gbps / cap:.0%} of {cap:g})" if cap else ""
        link = f"{s.link_gbps:.1f} Gbps{util}"
    t.add_row("offered", f"{s.rate:.2f} req/s", "link", link)
    if w is not None:
        t.add_row(
            "served",
            f"{w.throughput:.2f} req/s (goodput {w.goodput:.2f})",
            "offloaded",
            f"{w.offload:.0%}",
        )
        t.add_row(
            "TTFT",
            f"p50 {_f(w.ttft_p50, '{:.1f}')} s   p90 {_f(w.ttft_p90, '{:.1f}')} s",
            "in flight",
            f"{s.inflight} (failed {w.failed})",
        )
    events = Text("\n".join(s.events[-6:]) or "-", style="dim")
    return Panel(
        Group(t, Text(""), events),
        title="prfaas demo (case study, time-scaled)",
        subtitle="rates, times and Gbps in the case study's units",
    )


def summary_table(rows: list[tuple[str, Window, float | None]], base: Window | None) -> Table:
    t = Table(
        title="Summary: same offered load, case-study units",
        caption="good: req/s with TTFT within the SLO; p50/p90: TTFT; "
        "pool: share prefilled on the PrefillPool",
    )
    for col in ("setup", "req/s", "good", "p50 s", "p90 s", "pool", "Gbps", "fail", "×homog"):
        t.add_column(
            col, justify="left" if col == "setup" else "right", no_wrap=True, min_width=len(col)
        )
    for name, w, gbps in rows:
        ratio = f"{w.throughput / base.throughput:.2f}" if base and base.throughput else "-"
        t.add_row(
            name,
            f"{w.throughput:.2f}",
            f"{w.goodput:.2f}",
            _f(w.ttft_p50, "{:.1f}"),
            _f(w.ttft_p90, "{:.1f}"),
            f"{w.offload:.0%}",
            _f(gbps, "{:.1f}"),
            str(w.failed),
            ratio,
        )
    return t
