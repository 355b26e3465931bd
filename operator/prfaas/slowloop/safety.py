"""What the slow loop may change now: bounds, max step, cooldown and capacity floors.

Rules, in order:
1. a target is clamped to its declared bounds, always;
2. a group moves at most ``maxStep`` instances per change, and not again within ``cooldown``;
3. a group never shrinks below what the observed traffic needs once the plan's threshold routes
   it (its floor): the floor comes from the observed arrival rate, so a plan that cannot carry
   the traffic flowing now (an overload) never takes capacity from the group that needs it;
4. when a group cannot be reached (member cluster down), nothing changes there, and nothing
   shrinks anywhere else (the router fails open to local prefill, which must keep its capacity);
   a group whose replicas another writer changed (an HPA, KEDA, a GitOps tool) is left alone,
   bounds included: the operator never fights another controller;
5. the local prefill and decode groups share ``instances`` machines: one only grows by what the
   other gives up now (never past the total), so no instance is planned onto a machine in use;
6. growth is applied before shrinkage, so capacity never dips during a role conversion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Group:
    """One scalable group as observed now."""

    name: str  # a group name of ``observation``: "prefillPool", "prefill", "decode"
    current: int
    min: int
    max: int
    floor: int = 0  # needed by traffic at the current threshold
    reachable: bool = True
    last_change: datetime | None = None
    held: str = ""  # why the group is left alone (another writer owns its replicas)


@dataclass(frozen=True)
class Change:
    group: str
    current: int
    desired: int  # the plan's target, clamped to bounds
    next: int  # what is applied now (after step, cooldown, floor)
    reason: str

    @property
    def acts(self) -> bool:
        return self.next != self.current


def floor_for(rate_rps: float, per_instance_rps: float, share: float = 1.0) -> int:
    """Instances a stage needs for ``rate × share`` req/s at ``per_instance_rps`` each."""
    if rate_rps <= 0 or share <= 0 or per_instance_rps <= 0:
        return 0
    return math.ceil(rate_rps * share / per_instance_rps - 1e-9)


def _clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, value))


def safe_changes(
    groups: list[Group],
    targets: dict[str, int],
    max_step: int,
    cooldown: timedelta,
    now: datetime,
    shared: tuple[str, str, int] | None = None,
) -> list[Change]:
    """The changes to apply now, growth first; ``shared`` = (group, group, machines) (rule 5)."""
    any_unreachable = any(not g.reachable for g in groups)
    changes = []
    for g in groups:
        desired = _clamp(targets.get(g.name, g.current), g.min, g.max)
        step = _clamp(desired, g.current - max_step, g.current + max_step)
        reason = "toward plan"
        if g.held:
            changes.append(Change(g.name, g.current, desired, g.current, g.held))
            continue
        if not g.reachable:
            step, reason = g.current, "unreachable: holding"
        elif g.current < g.min or g.current > g.max:
            step, reason = _clamp(g.current, g.min, g.max), "outside declared bounds"
        elif step != g.current and g.last_change and now - g.last_change < cooldown:
            step, reason = g.current, "cooldown"
        elif step < g.current and any_unreachable:
            step, reason = g.current, "a member cluster is unreachable: no shrinking"
        elif step < g.current and step < g.floor:
            step = max(g.floor, step) if g.floor <= g.current else g.current
            reason = f"floor: traffic needs {g.floor}"
        if step == g.current and desired == g.current:
            reason = "at plan"
        changes.append(Change(g.name, g.current, desired, _clamp(step, g.min, g.max), reason))
    if shared is not None:
        changes = _share(changes, *shared)
    return sorted(changes, key=lambda c: c.next - c.current < 0)


def _share(changes: list[Change], a: str, b: str, machines: int) -> list[Change]:
    by_name = {c.group: c for c in changes}
    if a not in by_name or b not in by_name:
        return changes
    ca, cb = by_name[a], by_name[b]
    room = max(machines, ca.current + cb.current) - (ca.next + cb.next)
    if room >= 0:
        return changes
    # trim the growing side(s) until the pair fits
    fixed = {}
    for c in (ca, cb):
        grow = c.next - c.current
        if grow > 0 and room < 0:
            cut = min(grow, -room)
            room += cut
            reason = "waiting for the other role to free machines"
            fixed[c.group] = Change(c.group, c.current, c.desired, c.next - cut, reason)
    return [fixed.get(c.group, c) for c in changes]
