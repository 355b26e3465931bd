"""When a new optimum threshold is worth a new routing-policy version (``threshold.mode: Auto``).

Every version resets the routers' short-timescale adaptation, and a measured optimum is noisy:
at the demo's ~480 requests per Prometheus window it moves by ~5% (one standard deviation)
between independent windows, and consecutive passes share most of their window, so a noisy
excursion lasts several passes. The rule:

1. nothing published yet, or no optimum (no offload): publish what there is;
2. within ``deadbandFraction`` of the published t: keep it, and forget any excursion;
3. beyond it: keep the published t until the optimum has stayed beyond the deadband on the
   same side for ``dwellSeconds`` (kept in ``status.pendingThreshold``, so it survives a
   restart), then publish the latest optimum. ``dwellSeconds`` defaults to the Prometheus
   window for a measured workload (the move is then seen in traffic that shares no request
   with the pass where it began) and 0 for a declared one (no sampling noise).

On the demo's signals (recorded in ``tests/unit/data``: 30 minutes, prompts ~1.5x longer
half-way) the deadband alone published eleven versions, back and forth; this rule publishes
three: the first, one correction of it, and the shift, one window after it began.
"""

from __future__ import annotations

from datetime import datetime

from prfaas.api.pdcluster import PDClusterSpec, PendingThresholdStatus
from prfaas.slowloop.conditions import iso


def dwell_seconds(spec: PDClusterSpec) -> float:
    rule, prometheus = spec.policy.threshold, spec.workload.prometheus
    if rule.dwell_seconds is not None:
        return float(rule.dwell_seconds)
    return float(prometheus.window_seconds) if prometheus is not None else 0.0


def hold(
    spec: PDClusterSpec,
    published: int | None,
    optimum: int | None,
    pending: PendingThresholdStatus | None,
    now: datetime,
) -> tuple[int | None, PendingThresholdStatus | None]:
    """The threshold to publish and the excursion to remember."""
    rule = spec.policy.threshold
    if rule.mode != "Auto" or optimum is None or published is None:
        return optimum, None
    if abs(optimum - published) <= rule.deadband_fraction * published:
        return published, None
    since = now
    if pending is not None and (pending.tokens > published) == (optimum > published):
        since = datetime.fromisoformat(pending.since.replace("Z", "+00:00"))
    if (now - since).total_seconds() >= dwell_seconds(spec):
        return optimum, None
    return published, PendingThresholdStatus(tokens=optimum, since=iso(since))
