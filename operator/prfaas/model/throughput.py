"""The paper's steady-state throughput model, Eqs. (1)-(8), vectorised over numpy arrays.

Three stages: PrfaaS prefill (a remote PrefillPool), PD-P (local prefill), PD-D (local decode).
Every function broadcasts, so the planner evaluates whole grids of (N_prfaas, N_p, t) at once.

Service-time conventions (paper §6.2 and digest §9.2), chosen with ``ServiceTime``:

- ``subset_mean`` (default): a stage's service time is E[T_prefill(L) | L in its subset].
  For N saturated servers the renewal-reward theorem gives throughput N / E[service time]
  exactly; T_prefill is convex, so T(E[L]) under-estimates the mean service time and
  over-states throughput (Jensen). It also reproduces Table 6 (Θ_prfaas = 1.61).
- ``at_mean``: the paper's literal assumption, T_prefill(l_long) and S_kv(l_long).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from prfaas.model.curves import Curve, FloatArray
from prfaas.model.units import BITS_PER_GBIT, BITS_PER_MIB
from prfaas.model.workload import LengthGrid

ServiceTime = Literal["subset_mean", "at_mean"]


@dataclass(frozen=True)
class SplitStats:
    """What a threshold ``t`` does to the workload, for each candidate threshold.

    ``long`` = requests with uncached length > t (offloaded), ``short`` = the rest.
    Service times and KV sizes follow the chosen convention. Where a subset is empty its
    entries are NaN (nothing is sent there). ``all_*`` describe the whole workload sent to one
    place (the baselines).
    """

    thresholds: FloatArray
    p: FloatArray  # P(L > t): offload fraction
    l_long: FloatArray  # E[L | L > t]
    l_short: FloatArray  # E[L | L <= t]
    pool_seconds: FloatArray  # PrefillPool prefill time per offloaded request
    local_seconds: FloatArray  # PD-P prefill time per local request
    kv_mib: FloatArray  # KVCache shipped per offloaded request
    all_pool_seconds: float
    all_local_seconds: float
    all_kv_mib: float


def split_stats(
    grid: LengthGrid,
    thresholds: FloatArray,
    pool_prefill: Curve,
    local_prefill: Curve,
    kv_mib: Curve,
    service_time: ServiceTime = "subset_mean",
) -> SplitStats:
    """Offload fraction, subset means and per-request costs for every threshold.

    One pass: the curves are evaluated once on the length grid, then prefix sums give every
    subset mean by indexing, so the cost is O(grid + thresholds).
    """
    lengths, w = grid.lengths, grid.weights
    rows = np.stack(
        [
            np.ones_like(lengths),
            lengths,
            pool_prefill(lengths),
            local_prefill(lengths),
            kv_mib(lengths),
        ]
    )
    cum = np.zeros((rows.shape[0], lengths.size + 1))
    np.cumsum(rows * w, axis=1, out=cum[:, 1:])
    idx = np.searchsorted(lengths, thresholds, side="right")
    below, total = cum[:, idx], cum[:, -1:]
    above = total - below
    with np.errstate(invalid="ignore", divide="ignore"):
        short = np.where(below[0] > 1e-15, below / below[0], np.nan)
        long = np.where(above[0] > 1e-15, above / above[0], np.nan)
    # snap to exact 0/1 where a subset is empty, so an idle stage is unbounded, not 0/ε
    p = np.where(above[0] > 1e-15, np.clip(above[0], 0.0, 1.0), 0.0)
    p = np.where(below[0] > 1e-15, p, 1.0)
    mean_all = total[:, 0] / total[0, 0]
    if service_time == "subset_mean":
        pool_s, local_s, kv = long[2], short[3], long[4]
        all_pool, all_local, all_kv = (float(v) for v in mean_all[2:])
    else:  # at the subset's mean length (NaN propagates where a subset is empty)
        ll, ls = long[1], short[1]
        pool_s = np.where(np.isnan(ll), np.nan, pool_prefill(np.nan_to_num(ll)))
        local_s = np.where(np.isnan(ls), np.nan, local_prefill(np.nan_to_num(ls)))
        kv = np.where(np.isnan(ll), np.nan, kv_mib(np.nan_to_num(ll)))
        at_mean = np.array([mean_all[1]])
        all_pool = float(pool_prefill(at_mean)[0])
        all_local = float(local_prefill(at_mean)[0])
        all_kv = float(kv_mib(at_mean)[0])
    return SplitStats(
        thresholds, p, long[1], short[1], pool_s, local_s, kv, all_pool, all_local, all_kv
    )


def kv_throughput_gbps(kv_mib: FloatArray, prefill_seconds: FloatArray) -> FloatArray:
    """Eq. (1): Φ_kv(l) = S_kv(l) / T_prefill(l), in Gbps."""
    return np.asarray(kv_mib * BITS_PER_MIB / BITS_PER_GBIT / prefill_seconds, dtype=np.float64)


def theta_prfaas_compute(n_prfaas: FloatArray, pool_seconds: FloatArray) -> FloatArray:
    """Eq. (3), compute side: N_prfaas / T_prefill(l_long)."""
    return np.asarray(n_prfaas / pool_seconds, dtype=np.float64)


def theta_prfaas_egress(budget_gbps: float, kv_mib: FloatArray) -> FloatArray:
    """Eq. (3), egress side: B_out / S_kv(l_long)."""
    return np.asarray(budget_gbps * BITS_PER_GBIT / (kv_mib * BITS_PER_MIB), dtype=np.float64)


def theta_pd_prefill(n_prefill: FloatArray, local_seconds: FloatArray) -> FloatArray:
    """Eq. (4): N_p / T_prefill(l_short)."""
    return np.asarray(n_prefill / local_seconds, dtype=np.float64)


def theta_pd_decode(
    n_decode: FloatArray, max_batch: float, step_seconds: float, output_tokens: float
) -> FloatArray:
    """Eq. (5): N_d · BS_max / (T_decode · L_out)."""
    return np.asarray(n_decode * max_batch / (step_seconds * output_tokens), dtype=np.float64)


def prefill_bound(theta: FloatArray, share: FloatArray) -> FloatArray:
    """Θ / share, the arrival rate a prefill stage sustains; +inf where it gets no traffic."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(share > 0, theta / np.where(share > 0, share, 1.0), np.inf)
    return np.asarray(out, dtype=np.float64)


def lambda_max(
    theta_prfaas: FloatArray, theta_pdp: FloatArray, theta_pdd: FloatArray, p: FloatArray
) -> FloatArray:
    """Eq. (6): min(Θ_prfaas / p, Θ_pd-p / (1 − p), Θ_pd-d)."""
    pool = prefill_bound(np.nan_to_num(theta_prfaas, nan=0.0), p)
    local = prefill_bound(np.nan_to_num(theta_pdp, nan=0.0), 1.0 - p)
    return np.asarray(np.minimum(np.minimum(pool, local), theta_pdd), dtype=np.float64)
