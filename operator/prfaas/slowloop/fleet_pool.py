"""One pass of a shared PrefillPool's own reconcile (pure): the pool's only writer in a fleet.

Its size comes from the fleet's joint plan (``slowloop.fleet``), the same plan its PDClusters
read their shares from, and moves under the same safety rules as any group: within its bounds,
at most the users' smallest ``maxStep`` per change, not within their longest ``cooldownSeconds``
of its last change (kept in its status), never below what its users' traffic needs at their
thresholds, never while its ``/scale`` does not answer, and only when every user is in
``Enforce`` (one ``Observe`` user: the pool is planned and reported, not scaled).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prfaas.api.common import Condition
from prfaas.api.pdcluster import PDClusterSpec
from prfaas.api.prefillpool import PoolUserStatus, PrefillPoolSpec, PrefillPoolStatus
from prfaas.model.fleet_planner import PoolPlan
from prfaas.slowloop.conditions import iso, set_condition
from prfaas.slowloop.decide import Event
from prfaas.slowloop.fleet import FleetOutcome
from prfaas.slowloop.observation import POOL, GroupObservation
from prfaas.slowloop.safety import Change, Group, safe_changes


@dataclass
class PoolDecision:
    change: Change | None  # None: no plan for the pool now (held where it is)
    enforce: bool
    status: PrefillPoolStatus
    events: list[Event] = field(default_factory=list)

    @property
    def to_apply(self) -> Change | None:
        return (
            self.change if self.enforce and self.change is not None and self.change.acts else None
        )

    def outcome(self, now: datetime, failed: str | None = None) -> PrefillPoolStatus:
        """The status once ``to_apply`` was attempted (``failed``: its error)."""
        change, status = self.to_apply, self.status
        if change is None:
            return status
        if failed is not None:
            self.events.append(Event("Warning", "ScaleFailed", f"{change.current} → "
                                     f"{change.next}: {failed}"))  # fmt: skip
            conditions = set_condition(status.conditions, "Ready", "False", "ScaleFailed", failed,
                                       status.observed_generation, iso(now))  # fmt: skip
            return status.model_copy(update={"conditions": conditions})
        message = f"{change.current} → {change.next} (fleet plan {change.desired}; {change.reason})"
        self.events.append(Event("Normal", "Scaled", message))
        return status.model_copy(update={"replicas": change.next, "scaled_at": iso(now)})


def users_of(fleet: FleetOutcome, pool: str, users: Sequence[str]) -> list[PoolUserStatus]:
    """Every PDCluster that lists the pool, with its share in the plan (0 without one)."""
    shares = {
        c.name: s for c in (fleet.plan.clusters if fleet.plan else ()) for s in c.shares
        if s.pool == pool
    }  # fmt: skip
    out = []
    for name in users:
        s = shares.get(name)
        out.append(
            PoolUserStatus(
                pdcluster=name,
                instances=round(s.instances, 4) if s else 0.0,
                rate_rps=round(s.rate_rps, 4) if s else 0.0,
                egress_gbps=round(s.egress_gbps, 4) if s else 0.0,
            )
        )
    return out


def traffic_floor(fleet: FleetOutcome, pool: str) -> int:
    """Instances the users' demand needs on this pool at their planned thresholds (their shares
    are at the planned rate: scaled to the demand, which may be above it under overload)."""
    need = 0.0
    for c in fleet.plan.clusters if fleet.plan else ():
        for s in c.shares:
            if s.pool == pool and c.throughput_rps > 0:
                need += s.instances * c.demand_rps / c.throughput_rps
    return math.ceil(need - 1e-9) if need > 0 else 0


def decide_pool(
    name: str,
    spec: PrefillPoolSpec,
    old: PrefillPoolStatus,
    generation: int | None,
    seen: GroupObservation,
    fleet: FleetOutcome,
    users: Mapping[str, PDClusterSpec],
    now: datetime,
    *,
    dry_run: bool = False,
    unknown: Sequence[str] = (),
) -> PoolDecision:
    """``unknown``: users whose demand is not known yet (no workload published): the pool is
    held where it is until it is (sizing it for the others alone could shrink it under them)."""
    plan = fleet.pool(name)
    listed = sorted(users)
    conditions = _conditions(name, old, generation, seen, fleet, listed, unknown, iso(now))
    status = PrefillPoolStatus(
        observed_generation=generation,
        replicas=seen.replicas if seen.known else old.replicas,
        desired_replicas=plan.n_prfaas if plan is not None else old.desired_replicas,
        phase="Ready" if seen.known else "Degraded",
        planned_by="Fleet",
        users=users_of(fleet, name, listed),
        scaled_at=old.scaled_at,
        conditions=conditions,
    )
    modes = {u.policy.mode for u in users.values()}
    enforce = modes == {"Enforce"} and not dry_run
    if plan is None or seen.replicas is None or unknown:
        return PoolDecision(None, enforce, status)
    contested = _contested(spec, old, seen.replicas, plan.n_prfaas, generation)
    held = "another writer owns its replicas" if contested else ""
    (change,) = _change(spec, old, seen.replicas, seen.known, fleet, plan, users, now, held)
    status = status.model_copy(
        update={
            "desired_replicas": change.desired,
            "contested_generation": generation if contested else None,
            "conditions": _contest_condition(status.conditions, contested, generation, iso(now)),
        }
    )
    events = []
    if contested and old.contested_generation != generation:
        events.append(Event("Warning", "ScaleContested", _CONTESTED))
    return PoolDecision(change, enforce, status, events)


_CONTESTED = (
    "replicas changed by another writer (an HPA, KEDA, or a GitOps tool re-applying replicas?); "
    "the operator leaves them alone until the PrefillPool's spec changes or they reach the plan"
)


def _contested(
    spec: PrefillPoolSpec, old: PrefillPoolStatus, now: int, planned: int, generation: int | None
) -> bool:
    """Another writer changed the pool since this writer's last pass (its replicas are not what
    it left), or did at this generation before; a pool that reached the plan is free again."""
    desired = max(spec.replicas.min, min(spec.replicas.max, planned))
    if now == desired:
        return False
    changed = old.planned_by == "Fleet" and old.replicas is not None and now != old.replicas
    carried = old.contested_generation is not None and old.contested_generation == generation
    return changed or carried


def _contest_condition(
    conditions: list[Condition], contested: bool, generation: int | None, at: str
) -> list[Condition]:
    if contested:
        return set_condition(conditions, "ScaleContested", "True", "AnotherWriter", _CONTESTED,
                             generation, at)  # fmt: skip
    return set_condition(conditions, "ScaleContested", "False", "SoleWriter", "", generation, at)


def _conditions(
    name: str,
    old: PrefillPoolStatus,
    generation: int | None,
    seen: GroupObservation,
    fleet: FleetOutcome,
    listed: Sequence[str],
    unknown: Sequence[str],
    at: str,
) -> list[Condition]:
    conditions = list(old.conditions)
    if seen.known:
        conditions = set_condition(conditions, "Ready", "True", "Reachable", "", generation, at)
    else:
        reason = seen.reason or ("Unreachable" if not seen.reachable else "TargetInvalid")
        conditions = set_condition(
            conditions, "Ready", "False", reason, seen.error or "", generation, at
        )
    plan = fleet.pool(name)
    if plan is None or unknown:
        why = fleet.without.get(name) or fleet.error or "no plan"
        if unknown:
            why = f"demand of {', '.join(unknown)} not known yet: holding the pool's size"
        return set_condition(conditions, "Planned", "False", "NoPlan", why, generation, at)
    message = f"fleet of {', '.join(listed)}: {plan.n_prfaas} instances, " \
        f"{plan.busy_instances:.2f} busy"  # fmt: skip
    return set_condition(conditions, "Planned", "True", "Fleet", message, generation, at)


def _change(
    spec: PrefillPoolSpec,
    old: PrefillPoolStatus,
    current: int,
    reachable: bool,
    fleet: FleetOutcome,
    plan: PoolPlan,
    users: Mapping[str, PDClusterSpec],
    now: datetime,
    held: str = "",
) -> list[Change]:
    last = old.scaled_at
    group = Group(
        name=POOL,
        current=current,
        min=spec.replicas.min,
        max=spec.replicas.max,
        floor=traffic_floor(fleet, plan.name),
        reachable=reachable,
        last_change=datetime.fromisoformat(last.replace("Z", "+00:00")) if last else None,
        held=held,
    )
    max_step = min((u.policy.max_step for u in users.values()), default=1)
    cooldown = max((u.policy.cooldown_seconds for u in users.values()), default=300)
    return safe_changes([group], {POOL: plan.n_prfaas}, max_step, timedelta(seconds=cooldown), now)
