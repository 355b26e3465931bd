"""From a run's record to the numbers users read: latency percentiles, throughput, goodput,
egress and offload over time.

TTFT percentiles include requests still waiting for their first token when a run is stopped
(``drain``), at their elapsed time so far (a lower bound; ``ttft_censored`` counts them), so a
backlog is never hidden by leaving its requests out. Rejected requests are ``dropped``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from prfaas.routing.decide import Target
from prfaas.sim.engine import Record
from prfaas.sim.options import SLO

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Series:
    bucket_s: float
    egress_gbps: list[float]
    offload_fraction: list[float | None]  # None: no arrival in the bucket
    threshold_tokens: list[float | None]  # effective threshold, mean over the bucket
    capacity_gbps: list[float | None]

    def times(self) -> list[float]:
        n = max(len(self.egress_gbps), len(self.offload_fraction), len(self.capacity_gbps))
        return [(k + 0.5) * self.bucket_s for k in range(n)]


@dataclass(frozen=True)
class PolicyResult:
    name: str
    summary: dict[str, Any]
    series: Series
    ttft: FloatArray  # sorted, for CDFs


def _pct(sorted_values: FloatArray, q: float) -> float | None:
    if sorted_values.size == 0:
        return None
    return float(np.percentile(sorted_values, q))


def summarise(rec: Record, slo: SLO, step_s: float) -> PolicyResult:
    arrival = np.asarray(rec.arrival)
    first = np.asarray(rec.first_token)
    done = np.asarray(rec.done)
    target = np.asarray(rec.target)
    arrived_mask = target != -2
    dropped_mask = target == int(Target.REJECT)
    completed_mask = ~np.isnan(done)
    served = arrived_mask & ~dropped_mask
    got_first = served & ~np.isnan(first) & (first <= rec.end_time)
    censored = served & ~got_first
    ttft = np.concatenate([first[got_first] - arrival[got_first], rec.end_time - arrival[censored]])
    ttft.sort()
    # TPOT: decode time per token after the first (one step each: T_decode is the SLO-held
    # constant of the model, so this is a check more than a measurement)
    steps = np.maximum(np.rint((done - first) / step_s), 1.0)
    tpot = ((done - first) / steps)[completed_mask]
    span = max(rec.end_time - (float(arrival[0]) if arrival.size else 0.0), 1e-9)
    tpot_slo = (slo.tpot_s if slo.tpot_s is not None else step_s) * (1 + 1e-9)
    within = completed_mask.copy()
    within[completed_mask] = (first - arrival)[completed_mask] <= slo.ttft_s
    within[completed_mask] &= tpot <= tpot_slo
    good_count = int(within.sum())
    n_served = int(served.sum())
    offloaded = int((target == int(Target.POOL)).sum())
    egress_total = float(sum(rec.egress_gbit))
    w = rec.bucket_s
    thresholds = [s / k if k else None for s, k in zip(rec.threshold_sum, rec.ticks, strict=True)]
    mean_t = [t for t in thresholds if t is not None]
    summary: dict[str, Any] = {
        "arrived": int(arrived_mask.sum()),
        "completed": int(completed_mask.sum()),
        "dropped": int(dropped_mask.sum()),
        "unfinished": n_served - int(completed_mask.sum()),
        "throughput_rps": float(completed_mask.sum()) / span,
        "goodput_rps": good_count / span,
        "ttft_mean_s": float(ttft.mean()) if ttft.size else None,
        "ttft_p50_s": _pct(ttft, 50),
        "ttft_p90_s": _pct(ttft, 90),
        "ttft_p99_s": _pct(ttft, 99),
        "ttft_censored": int(censored.sum()),
        "tpot_mean_s": float(tpot.mean()) if tpot.size else None,
        "offload_fraction": offloaded / n_served if n_served else 0.0,
        "egress_gbps_mean": egress_total / span,
        "egress_gbps_peak": max(rec.egress_gbit, default=0.0) / w,
        "pd_to_pool_gbps_mean": rec.reverse_gbit / span,
        "threshold_tokens": rec.setup.threshold,
        "threshold_mean_tokens": float(np.mean(mean_t)) if mean_t else None,
        "n_prfaas": rec.setup.n_pool,
        "n_prefill": rec.setup.n_prefill,
        "n_decode": rec.setup.n_decode,
        "cache_transfers": rec.cache_transfers,
        "policy_versions": rec.policy_versions,
        "role_changes": rec.role_changes,
        "final_n_prefill": rec.final_split[0],
        "final_n_decode": rec.final_split[1],
        "reasons": {str(k): v for k, v in sorted(rec.reasons.items())},
        "duration_s": span,
    }
    n = max(int(rec.end_time // w) + 1, len(rec.egress_gbit), len(rec.arrivals), len(thresholds))

    def pad(values: list[Any], fill: Any) -> list[Any]:
        return values + [fill] * (n - len(values))

    series = Series(
        w,
        pad([g / w for g in rec.egress_gbit], 0.0),
        pad([o / a if a else None for o, a in zip(rec.offloads, rec.arrivals, strict=True)], None),
        pad(thresholds, None),
        pad([None if math.isnan(c) else c for c in rec.capacity], None),
    )
    return PolicyResult(rec.setup.name, summary, series, ttft)
