"""Simulation figure: TTFT CDFs per policy, egress over time, threshold and offload over time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prfaas.report.plotting import pyplot, save
from prfaas.report.sim import TITLES
from prfaas.sim.run import SimReport

# one colour per policy in every panel
COLOURS = {
    "homogeneous": "tab:blue",
    "naive": "tab:orange",
    "prfaas_static": "tab:green",
    "prfaas": "tab:red",
}


def plot_sim(report: SimReport, path: Path) -> None:
    plt = pyplot()
    fig, (ax_cdf, ax_egress, ax_t) = plt.subplots(1, 3, figsize=(17, 4.6))
    slo = report.options.slo.ttft_s
    for name, r in report.results.items():
        ttft = r.ttft
        if ttft.size:
            y = np.arange(1, ttft.size + 1) / ttft.size
            ax_cdf.plot(
                np.maximum(ttft, 1e-3), y, color=COLOURS.get(name), label=TITLES.get(name, name)
            )
    ax_cdf.axvline(slo, color="grey", ls=":", label=f"SLO {slo:g} s")
    ax_cdf.axhline(0.9, color="grey", ls="--", lw=0.8)
    ax_cdf.set_xscale("log")
    ax_cdf.set_xlabel("TTFT (s)")
    ax_cdf.set_ylabel("fraction of requests")
    ax_cdf.set_title("(a) TTFT CDF")
    ax_cdf.legend(fontsize=8)
    ax_cdf.grid(alpha=0.3, which="both")

    capacity_drawn = False
    for name, r in report.results.items():
        s = r.series
        if not any(s.egress_gbps):
            continue
        times = np.arange(len(s.egress_gbps)) * s.bucket_s + s.bucket_s / 2
        ax_egress.plot(times, s.egress_gbps, color=COLOURS.get(name), label=TITLES.get(name, name))
        if not capacity_drawn:
            cap = np.array([np.nan if c is None else c for c in s.capacity_gbps], dtype=float)
            ct = np.arange(len(cap)) * s.bucket_s + s.bucket_s / 2
            ax_egress.plot(ct, cap, "k--", lw=1, label="link capacity")
            capacity_drawn = True
    ax_egress.set_yscale("symlog", linthresh=1)
    ax_egress.set_xlabel("time (s)")
    ax_egress.set_ylabel("Gbps (PrefillPool → PD)")
    ax_egress.set_title("(b) KV egress over time")
    ax_egress.legend(fontsize=8)
    ax_egress.grid(alpha=0.3)

    ax_off = ax_t.twinx()
    for name in ("prfaas_static", "prfaas"):
        found = report.results.get(name)
        if found is None:
            continue
        s = found.series
        t = np.array([np.nan if v is None else v / 1000 for v in s.threshold_tokens])
        off = np.array([np.nan if v is None else v for v in s.offload_fraction], dtype=float)
        ax_t.plot(
            np.arange(t.size) * s.bucket_s + s.bucket_s / 2,
            t,
            color=COLOURS[name],
            label=f"t: {TITLES[name]}",
        )
        ax_off.plot(
            np.arange(off.size) * s.bucket_s + s.bucket_s / 2,
            off,
            ls=":",
            color=COLOURS[name],
            alpha=0.8,
            label=f"offloaded: {TITLES[name]}",
        )
    ax_t.set_xlabel("time (s)")
    ax_t.set_ylabel("effective threshold (K tokens)")
    ax_off.set_ylabel("fraction offloaded")
    ax_off.set_ylim(0, 1)
    ax_t.set_title("(c) threshold and offload over time")
    lines = ax_t.get_legend_handles_labels()
    more = ax_off.get_legend_handles_labels()
    ax_t.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7)
    ax_t.grid(alpha=0.3)
    fig.suptitle(
        f"PrfaaS simulation: {report.requests:,} requests at {report.rate_rps:.2f} req/s "
        f"({report.options.arrivals})"
    )
    save(fig, path)
