"""The two panels of the paper's Figure 5, drawn from the planner's surface."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prfaas.model.curves import FloatArray
from prfaas.model.planner import PlanResult
from prfaas.report.plotting import pyplot, save


def _finite(a: FloatArray) -> FloatArray:
    return np.where(np.isfinite(a), a, np.nan)


def plot_plan(result: PlanResult, path: Path) -> None:
    """(a) Λ_max vs local split at the best t; (b) both prefill bounds vs t at the best split."""
    plt = pyplot()
    s, best = result.surface, result.prfaas
    k = int(np.flatnonzero(s.n_prfaas == best.n_prfaas)[0])
    i = int(np.flatnonzero(s.n_prefill == best.n_prefill)[0])
    j = int(np.flatnonzero(s.thresholds == best.threshold_tokens)[0])

    t_k = s.thresholds / 1000
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(12, 4.5))
    n_local = best.n_prefill + best.n_decode
    splits = [f"{int(n)}/{n_local - int(n)}" for n in s.n_prefill]
    x = np.arange(len(splits))
    ax_a.plot(x, s.throughput[k, :, j], "ko-", lw=2, label="Λ_max")
    ax_a.plot(x, np.full(len(x), s.pool_bound[k, j]), "--", label="Θ_prfaas / p")
    ax_a.plot(x, _finite(s.local_bound[:, j]), "s--", label="Θ_pd-p / (1 − p)")
    ax_a.plot(x, s.decode, "^--", label="Θ_pd-d")
    ax_a.axvline(i, color="grey", ls=":")
    ax_a.set_xticks(x, splits)
    ax_a.set_xlabel("local split N_p / N_d")
    ax_a.set_ylabel("req/s")
    ax_a.set_ylim(0, max(float(np.nanmax(s.throughput[k, :, j])) * 1.6, 0.1))
    ax_a.set_title(f"(a) t = {t_k[j]:.1f}K, N_prfaas = {best.n_prfaas}")
    ax_a.legend(fontsize=8)
    ax_a.grid(alpha=0.3)

    ax_b.plot(t_k, _finite(s.pool_bound[k]), "--", label="Θ_prfaas / p")
    ax_b.plot(t_k, _finite(s.local_bound[i]), "--", label="Θ_pd-p / (1 − p)")
    ax_b.plot(t_k, s.throughput[k, i], "k", lw=2, label="Λ_max")
    ax_b.axhline(float(s.decode[i]), color="tab:green", ls="--", label="Θ_pd-d")
    ax_b.axvline(t_k[j], color="grey", ls=":")
    ax_b.annotate(
        f"t* = {t_k[j]:.1f}K, Λ = {best.throughput_rps:.2f}",
        (t_k[j], best.throughput_rps),
        textcoords="offset points",
        xytext=(-170, 24),
    )
    ax_b.set_xlim(0, min(float(t_k[-1]), max(3 * float(t_k[j]), 20.0)))
    ax_b.set_ylim(0, best.throughput_rps * 2.5)
    ax_b.set_xlabel("threshold t (K tokens)")
    ax_b.set_ylabel("req/s")
    ax_b.set_title(f"(b) N_p = {best.n_prefill}, N_d = {best.n_decode}")
    ax_b.legend(fontsize=8)
    ax_b.grid(alpha=0.3)
    fig.suptitle("PrfaaS-PD throughput (paper Figure 5)")
    save(fig, path)
