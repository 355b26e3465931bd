"""One slow-loop pass as a pure function of what was seen, the previous status and the time.

``decide`` plans, applies the safety rules and returns a ``Decision``: the scale changes to make,
and ``Decision.outcome(failed)`` — the status, events and routing policy once the caller has
made them (a change that failed is reported, and the routing policy follows what runs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from prfaas.api.common import Handoff
from prfaas.api.pdcluster import (
    ContestedStatus,
    EndpointDiscovery,
    PDClusterSpec,
    PDClusterStatus,
    PendingThresholdStatus,
    PlanStatus,
    PoolRoute,
    ReplicasStatus,
    RoutingPolicyStatus,
    ScaledAtStatus,
    SignalsStatus,
    StagesStatus,
)
from prfaas.api.planning import scenario_for
from prfaas.api.prefillpool import PrefillPoolSpec, PrefillPoolStatus
from prfaas.model.planner import Plan, PlanError, grid_cells, plan
from prfaas.model.profiles import LinkProfile
from prfaas.model.scenario import PDSpec, PoolSpec, Scenario
from prfaas.slowloop.conditions import Status, is_true, iso, set_condition
from prfaas.slowloop.observation import (
    DECODE,
    POOL,
    PREFILL,
    GroupName,
    Observation,
    Signals,
    SignalsUnavailable,
)
from prfaas.slowloop.safety import Change, Group, floor_for, safe_changes
from prfaas.slowloop.threshold import hold


class Plans(Protocol):
    """What a pass reads of a plan: a ``PlanResult``, or the operator's memo of one."""

    @property
    def prfaas(self) -> Plan: ...
    @property
    def homogeneous(self) -> Plan: ...


Planner = Callable[[Scenario], Plans]
Phase = Literal["Planned", "Applied", "Holding", "Degraded"]
_SCALED_FIELD: dict[GroupName, str] = {
    POOL: "prefill_pool",
    PREFILL: "prefill",
    DECODE: "decode",
}


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Outcome:
    """What a pass writes: the CR's status, events, and the PrefillPool's status."""

    status: PDClusterStatus
    events: list[Event] = field(default_factory=list)
    applied: list[Change] = field(default_factory=list)
    pool_status: PrefillPoolStatus | None = None
    pool_name: str | None = None
    pools: list[Any] = field(default_factory=list)
    """Fleet: the passes over the fleet's pools this pass made (``controller.fleet.PoolPass``)."""


class _Report:
    """Conditions, events and problems as a pass accumulates them."""

    def __init__(self, old: PDClusterStatus, generation: int | None, now: datetime) -> None:
        self.old = old
        self.generation = generation
        self.at = iso(now)
        self.conditions = list(old.conditions)
        self.events: list[Event] = []
        self.problems: list[tuple[str, str]] = []  # (condition reason, message)
        self.contested: ContestedStatus | None = old.contested

    def cond(self, ctype: str, status: Status, reason: str, message: str = "") -> None:
        self.conditions = set_condition(
            self.conditions, ctype, status, reason, message, self.generation, self.at
        )

    def event(self, etype: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(etype, reason, message))

    def close_degraded(self) -> None:
        if self.problems:  # the first problem names the reason; the message lists them all
            self.cond(
                "Degraded", "True", self.problems[0][0], "; ".join(m for _, m in self.problems)
            )
        else:
            self.cond("Degraded", "False", "AllReachable", "")

    def status(self, phase: Phase, **parts: Any) -> PDClusterStatus:
        """The previous status with ``parts`` (None: keep the previous value) replaced."""
        update = {k: v for k, v in parts.items() if v is not None}
        update.update(observed_generation=self.generation, phase=phase, conditions=self.conditions)
        return self.old.model_copy(update=update)


def invalid_spec(
    old: PDClusterStatus, generation: int | None, now: datetime, where: str, message: str
) -> Outcome:
    """A spec the models reject (the API server's schema is older or was bypassed)."""
    report = _Report(old, generation, now)
    report.cond("Ready", "False", "InvalidSpec", f"spec.{where}: {message}")
    report.event("Warning", "InvalidSpec", f"spec.{where}")
    return Outcome(report.status("Degraded"), report.events)


@dataclass
class Decision:
    """The pass's plan and the scale changes it allows; ``outcome`` reports it."""

    obs: Observation
    report: _Report
    now: datetime
    signals: Signals
    scenario: Scenario
    target: Plan
    now_plan: Plan | None  # the best threshold for the counts running now
    changes: list[Change]  # every group, growth first
    enforce: bool
    dry_run: bool
    planner: Planner
    mean_tokens: float | None = None  # the workload's mean length, as the planner computed it

    @property
    def to_apply(self) -> list[Change]:
        """The ``/scale`` writes to make now, growth first (none unless enforcing)."""
        return [c for c in self.changes if c.acts] if self.enforce else []

    def outcome(self, failed: Mapping[str, str] | None = None) -> Outcome:
        """Status and events once ``to_apply`` was attempted; ``failed``: group → error."""
        failed = failed or {}
        r = self.report
        applied = record_failures(r, self.to_apply, failed)
        after, scaled = self._scaled(applied)
        # the routing policy routes for the counts that run after this step
        routed = _plan_for_counts(self.scenario, after, self.planner) if applied else self.now_plan
        policy, plan_status, held = self._publish(routed)
        pending = still_pending(self.changes, self.enforce, failed)
        plan_applied(r, pending, self.enforce, self.dry_run, "every group is at its planned size")
        r.close_degraded()
        r.cond("Ready", "True", "Planned", f"plan from {self.signals.source} signals")
        phase: Phase = (
            "Degraded" if r.problems else ("Applied" if self.enforce and not pending else "Planned")
        )
        status = r.status(
            phase,
            plan=plan_status,
            routing_policy=policy,
            signals=signals_status(self.signals, r.at, self.mean_tokens),
            replicas=ReplicasStatus(
                **{_SCALED_FIELD[g]: v for g, v in after.items() if v is not None}
            ),
            scaled_at=scaled,
            last_applied_time=r.at if applied else None,
        ).model_copy(update={"pending_threshold": held, "contested": r.contested})  # None clears
        return Outcome(status, r.events, applied, self._pool_status(after), self._pool_name())

    def _scaled(self, applied: list[Change]) -> tuple[dict[GroupName, int | None], ScaledAtStatus]:
        """Counts after the applied changes, and when each group was last scaled."""
        r = self.report
        after = _counts(self.obs, r.old)
        stamps: dict[str, str] = {}
        for c in applied:
            after[c.group] = c.next  # type: ignore[index]
            stamps[_SCALED_FIELD[c.group]] = r.at  # type: ignore[index]
            message = f"{c.group} {c.current} → {c.next} (plan {c.desired}; {c.reason})"
            r.event("Normal", "Scaled", message)
        return after, (r.old.scaled_at or ScaledAtStatus()).model_copy(update=stamps)

    def _publish(
        self, routed: Plan | None
    ) -> tuple[RoutingPolicyStatus, PlanStatus, PendingThresholdStatus | None]:
        """The routing policy, the plan and the threshold excursion not yet published, with an
        event for each of the first two that changed."""
        r, old, t = self.report, self.report.old, self.target
        policy, pending = routing_policy(
            self.obs, routed, old.routing_policy, self.now, old.pending_threshold
        )
        if old.routing_policy is None or policy.version != old.routing_policy.version:
            message = f"v{policy.version}: threshold {policy.threshold_tokens} tokens"
            r.event("Normal", "RoutingPolicy", message)
        plan_status = plan_status_of(t, r.at)
        if old.plan is None or _plan_key(old.plan) != _plan_key(plan_status):
            r.event(
                "Normal",
                "Planned",
                f"t={t.threshold_tokens} N_prfaas={t.n_prfaas} N_p={t.n_prefill} "
                f"N_d={t.n_decode} Λ={t.throughput_rps:.2f} req/s ({t.binding}-bound)",
            )
        return policy, plan_status, pending

    def _pool_status(self, after: Mapping[GroupName, int | None]) -> PrefillPoolStatus | None:
        if self.obs.usable_pool is None:
            return None
        pool, seen = self.obs.pool, self.obs.groups[POOL]
        assert pool is not None
        change = next(c for c in self.changes if c.group == POOL)
        old = pool.status or PrefillPoolStatus()
        at, gen = self.report.at, pool.generation
        if seen.known:
            ready = set_condition(old.conditions, "Ready", "True", "Reachable", "", gen, at)
        else:
            reason = seen.reason or ("Unreachable" if not seen.reachable else "TargetInvalid")
            ready = set_condition(
                old.conditions, "Ready", "False", reason, seen.error or "", gen, at
            )
        return PrefillPoolStatus(
            observed_generation=gen,
            replicas=after.get(POOL),
            desired_replicas=change.desired,
            phase="Ready" if seen.known else "Degraded",
            conditions=ready,
        )

    def _pool_name(self) -> str | None:
        return self.obs.pool.link.name if self.obs.pool is not None else None


def decide(
    obs: Observation,
    old: PDClusterStatus,
    now: datetime,
    generation: int | None = None,
    *,
    dry_run: bool = False,
    planner: Planner = plan,
    max_plan_cells: int | None = None,
) -> Decision | Outcome:
    """Plan and limit the changes; an ``Outcome`` straight away when there is nothing to act on
    (stale signals: hold the last good plan; no feasible plan; a plan over ``max_plan_cells``,
    the operator's budget per pass, see ``grid_cells``)."""
    r = _Report(old, generation, now)
    r.problems = _problems(obs, old)
    signals = obs.signals
    if isinstance(signals, SignalsUnavailable):
        return _holding(r, signals, obs)
    r.cond("SignalsStale", "False", "Fresh", f"{signals.source} signals")
    current = _counts(obs, old)
    try:
        target, scenario, mean = _plan_target(
            obs, signals, planner, current.get(POOL), max_plan_cells
        )
    except PlanError as exc:
        reason = "PlanTooLarge" if isinstance(exc, PlanTooLargeError) else "PlanFailed"
        r.problems.append((reason, f"plan failed: {exc}"))
        r.cond("Ready", "False", reason, str(exc))
        r.cond("PlanApplied", "False", "Holding", "no plan")
        r.close_degraded()
        return Outcome(r.status("Degraded", routing_policy=_held_policy(r, obs)), r.events)
    now_plan = (
        _plan_for_counts(scenario, current, planner)
        if obs.usable_pool is None or current.get(POOL)
        else None
    )
    spec, targets = obs.spec, _targets(obs, target)
    contested = _contested(obs, old, generation, targets)
    changes = safe_changes(
        _groups(obs, old, _floors(signals.arrival_rate_rps, target), contested),
        targets,
        spec.policy.max_step,
        timedelta(seconds=spec.policy.cooldown_seconds),
        now,
        shared=(PREFILL, DECODE, spec.instances),
    )
    enforce = spec.policy.mode == "Enforce" and not dry_run
    _report_contest(r, old, obs, contested)
    return Decision(
        obs, r, now, signals, scenario, target, now_plan, changes, enforce, dry_run, planner, mean
    )


def record_failures(r: _Report, to_apply: list[Change], failed: Mapping[str, str]) -> list[Change]:
    """Each failed ``/scale`` write as a problem; the changes that went through."""
    r.problems += [("ScaleFailed", f"{g}: scaling failed: {m}") for g, m in failed.items()]
    return [c for c in to_apply if c.group not in failed]


def still_pending(changes: list[Change], enforce: bool, failed: Mapping[str, str]) -> list[Change]:
    """Changes that leave their group short of the plan after this pass."""
    return [
        c for c in changes if c.next != c.desired or (c.acts and not enforce) or c.group in failed
    ]


def plan_applied(
    r: _Report, pending: list[Change], enforce: bool, dry_run: bool, at_plan: str
) -> None:
    """The ``PlanApplied`` condition; ``at_plan``: its message once nothing is pending."""
    if dry_run:
        r.cond("PlanApplied", "False", "DryRun", "the operator runs with --dry-run: nothing is "
               "scaled")  # fmt: skip
    elif not enforce:
        r.cond("PlanApplied", "False", "Observe", "policy.mode is Observe: nothing is scaled")
    elif pending:
        r.cond("PlanApplied", "False", "InProgress",
               "; ".join(f"{c.group}: {c.reason}" for c in pending))  # fmt: skip
    else:
        r.cond("PlanApplied", "True", "AtPlan", at_plan)


# -- the steps -------------------------------------------------------------------------------
def _problems(obs: Observation, old: PDClusterStatus) -> list[tuple[str, str]]:
    problems = []
    if obs.pool is not None and obs.pool.problem is not None:
        problems.append(obs.pool.problem)
    for g, o in obs.groups.items():
        if o.unschedulable:  # e.g. a full node group: the plan runs short, say so
            n = len(o.unschedulable)
            problems.append(
                ("Unschedulable", f"{g}: {n} pod(s) Pending, e.g. {o.unschedulable[0]}")
            )
        if not o.error:
            continue
        message = f"{g}: {o.error}"
        if g == POOL and not o.reachable:  # its engines may serve on: the routers check them
            seen = getattr(old.replicas or ReplicasStatus(), _SCALED_FIELD[POOL])
            message += (
                f"; the routing policy keeps the pool as last seen ({seen} instances)"
                if seen
                else "; not offloading to it until its size has been seen once"
            )
        reason = o.reason or ("Unreachable" if not o.reachable else "TargetInvalid")
        problems.append((reason, message))
    return problems


def _counts(obs: Observation, old: PDClusterStatus) -> dict[GroupName, int | None]:
    """Each group's replicas as read now; for one whose cluster did not answer, as last seen
    (an unreachable API server says nothing about the engines, which keep serving)."""
    seen = old.replicas or ReplicasStatus()
    return {
        g: o.replicas if o.reachable else getattr(seen, _SCALED_FIELD[g])
        for g, o in obs.groups.items()
    }


def _holding(r: _Report, signals: SignalsUnavailable, obs: Observation) -> Outcome:
    was_stale = is_true(r.conditions, "SignalsStale")
    r.cond("SignalsStale", "True", signals.reason, signals.message)
    r.cond("Ready", "False", "SignalsStale", "holding the last good plan")
    r.cond("PlanApplied", "False", "Holding", "signals are stale: no changes")
    r.close_degraded()
    if not was_stale:
        r.event("Warning", "SignalsStale", f"{signals.message}; holding the last good plan")
    return Outcome(r.status("Holding", routing_policy=_held_policy(r, obs)), r.events)


def _held_policy(r: _Report, obs: Observation) -> RoutingPolicyStatus | None:
    """The last plan's policy, holding, but with the pool's engines as they are now."""
    old = r.old.routing_policy
    if old is None or obs.pool is None or obs.pool.endpoints is None:
        return None
    new = with_pool_engines(old, obs.pool.link.name, obs.pool.endpoints)
    if new.version != old.version:
        r.event("Normal", "RoutingPolicy", f"v{new.version}: {endpoints_message(new)}")
    return new


def endpoints_message(policy: RoutingPolicyStatus) -> str:
    return ", ".join(f"{p.name}: {len(p.endpoints)} ready" for p in policy.prefill_pools)


def _link(obs: Observation) -> LinkProfile | None:
    """The link to plan for: as declared, or at its measured capacity when one is given."""
    if obs.pool is None:
        return None
    link = obs.pool.link.link
    if obs.link_capacity_gbps is not None:
        link = link.model_copy(update={"capacity_gbps": obs.link_capacity_gbps})
    return link


class PlanTooLargeError(PlanError):
    """The planning grid exceeds the operator's budget per pass."""


def _budgeted(scenario: Scenario, max_cells: int | None) -> Scenario:
    cells = grid_cells(scenario)
    if max_cells is not None and cells > max_cells:
        raise PlanTooLargeError(
            f"the search grid has {cells:,} cells (pool sizes × local splits × thresholds); "
            f"the operator plans at most {max_cells:,} per pass: raise "
            "policy.threshold.stepTokens, or narrow the replica bounds or the length range"
        )
    return scenario


def _plan_target(
    obs: Observation,
    signals: Signals,
    planner: Planner,
    pool_now: int | None,
    max_cells: int | None,
) -> tuple[Plan, Scenario, float | None]:
    """The plan, its scenario, and the workload's mean length (the homogeneous baseline's, which
    is the whole distribution's: a 131K-point grid not computed again for the status)."""
    spec, pool, link = obs.spec, obs.usable_pool, _link(obs)
    if pool is None or link is None or obs.pool is None:
        # no usable PrefillPool: plan the local cluster alone (the homogeneous split)
        scenario = scenario_for(
            obs.name, spec, "none", _no_pool(spec), 1, _UNBOUNDED, signals.workload
        )
        settings = scenario.planner.model_copy(update={"homogeneous_instances": spec.instances})
        scenario = _budgeted(scenario.model_copy(update={"planner": settings}), max_cells)
        plans = planner(scenario)
        return plans.homogeneous, scenario, plans.homogeneous.l_short
    scenario = scenario_for(
        obs.name,
        spec,
        obs.pool.link.name,
        pool,
        pool_now if pool_now is not None else pool.replicas.min,
        link,
        signals.workload,
    )
    plans = planner(_budgeted(scenario, max_cells))
    return plans.prfaas, scenario, plans.homogeneous.l_short


_UNBOUNDED = LinkProfile(capacity_gbps=1_000_000)


def _no_pool(spec: PDClusterSpec) -> PrefillPoolSpec:
    from prfaas.api.common import ReplicaBounds

    return PrefillPoolSpec(
        datacenter=spec.datacenter,
        instance=spec.instance,
        replicas=ReplicaBounds(min=0, max=1),
        scale_target_ref=spec.prefill.scale_target_ref,
    )


def _targets(obs: Observation, target: Plan) -> dict[str, int]:
    targets: dict[str, int] = {PREFILL: target.n_prefill, DECODE: target.n_decode}
    if obs.usable_pool is not None:
        targets[POOL] = target.n_prfaas
    return targets


def _contested(
    obs: Observation, old: PDClusterStatus, generation: int | None, targets: Mapping[str, int]
) -> list[str]:
    """Groups another writer changed since the last pass (its replicas are not what this
    operator left), and those still contested from before at this generation; a group that
    reached the plan on its own is free again."""
    seen = old.replicas or ReplicasStatus()
    before = old.contested
    carried = set(before.groups) if before and before.generation == generation else set()
    contested: list[str] = []
    for g, o in obs.groups.items():
        last, now = getattr(seen, _SCALED_FIELD[g]), o.replicas
        changed = last is not None and now is not None and now != last
        at_plan = now is not None and now == targets.get(g, now)
        if (changed or g in carried) and not at_plan:
            contested.append(g)
    return contested


def _report_contest(
    r: _Report, old: PDClusterStatus, obs: Observation, contested: list[str]
) -> None:
    if not contested:
        r.cond("ScaleContested", "False", "SoleWriter", "")
        r.contested = None
        return
    before = old.contested
    same = before is not None and before.groups == contested
    message = (
        f"{', '.join(contested)}: replicas changed by another writer (an HPA, KEDA, or a GitOps "
        "tool re-applying replicas?); the operator leaves them alone until the PDCluster's spec "
        "changes or they reach the plan"
    )
    r.cond("ScaleContested", "True", "AnotherWriter", message)
    if not same:
        r.event("Warning", "ScaleContested", message)
    since = before.since if same and before is not None else r.at
    r.contested = ContestedStatus(groups=contested, generation=r.generation, since=since)


def _groups(
    obs: Observation,
    old: PDClusterStatus,
    floors: Mapping[str, int],
    contested: Sequence[str] = (),
) -> list[Group]:
    spec, pool = obs.spec, obs.usable_pool
    seen = old.replicas or ReplicasStatus()
    scaled = old.scaled_at or ScaledAtStatus()
    groups = []
    for g, o in obs.groups.items():
        if g == POOL and pool is None:
            continue
        bounds = (
            spec.prefill.replicas
            if g == PREFILL
            else spec.decode.replicas
            if g == DECODE
            else pool.replicas  # type: ignore[union-attr]
        )
        current = o.replicas
        if current is None:  # unknown: hold it where it was last seen
            current = getattr(seen, _SCALED_FIELD[g]) or bounds.min
        last = getattr(scaled, _SCALED_FIELD[g])
        groups.append(
            Group(
                name=g,
                current=current,
                min=bounds.min,
                max=bounds.max,
                floor=floors.get(g, 0),
                reachable=o.known,
                last_change=datetime.fromisoformat(last.replace("Z", "+00:00")) if last else None,
                held="another writer owns its replicas" if g in contested else "",
            )
        )
    return groups


def _plan_for_counts(
    scenario: Scenario, counts: Mapping[GroupName, int | None], planner: Planner
) -> Plan | None:
    """The best threshold for instance counts as they are (``None`` if they cannot serve)."""
    n_p, n_d, n_pool = counts.get(PREFILL), counts.get(DECODE), counts.get(POOL)
    if not n_p or not n_d:
        return None
    fixed = scenario.model_copy(
        update={
            "pd_cluster": PDSpec.model_construct(
                **{
                    **dict(scenario.pd_cluster),
                    "instances": n_p + n_d,
                    "min_prefill": n_p,
                    "min_decode": n_d,
                }
            ),
            "prefill_pool": PoolSpec.model_construct(
                **{**dict(scenario.prefill_pool), "instances": n_pool or 0}
            ),
            "planner": scenario.planner.model_copy(update={"pool_instances": None}),
        }
    )
    try:
        result = planner(fixed)
    except PlanError:
        return None
    return result.prfaas if n_pool else result.homogeneous


def _floors(rate: float | None, target: Plan) -> dict[str, int]:
    """Instances each group needs for the observed traffic once the plan's threshold routes it
    (the policy published with the change). Under overload these exceed the plan's counts, so
    a group the traffic needs is never shrunk."""
    if not rate:
        return {}
    floors: dict[str, int] = {}
    p = target.offload_fraction
    if target.n_decode:
        floors[DECODE] = floor_for(rate, target.theta_pd_decode / target.n_decode)
    if target.n_prefill and target.theta_pd_prefill:
        floors[PREFILL] = floor_for(rate, target.theta_pd_prefill / target.n_prefill, 1 - p)
    if target.n_prfaas and target.theta_prfaas_compute:
        floors[POOL] = floor_for(rate, target.theta_prfaas_compute / target.n_prfaas, p)
    return floors


def routing_policy(
    obs: Observation,
    routed: Plan | None,
    previous: RoutingPolicyStatus | None,
    now: datetime,
    pending: PendingThresholdStatus | None = None,
) -> tuple[RoutingPolicyStatus, PendingThresholdStatus | None]:
    """The policy for the plan that runs, and the threshold excursion not yet published
    (``slowloop.threshold``); a new version only when the content changes."""
    spec, pool, link = obs.spec, obs.usable_pool, _link(obs)
    threshold = None
    pools: list[PoolRoute] = []
    if (
        routed is not None
        and routed.n_prfaas > 0
        and pool is not None
        and link is not None
        and obs.pool is not None
    ):
        kept = previous.threshold_tokens if previous else None
        threshold, pending = hold(spec, kept, routed.threshold_tokens, pending, now)
        pools = [
            PoolRoute(
                name=obs.pool.link.name,
                endpoints=_pool_endpoints(obs, previous),
                link_budget_gbps=link.budget_gbps,
                handoff=published_handoff(pool.handoff),
                discovered=pool.endpoints.discovers or None,
            )
        ]
    else:
        pending = None
    candidate = RoutingPolicyStatus(
        version=previous.version if previous else 0,
        threshold_tokens=threshold,
        prefill_pools=pools,
        prefill_endpoints=list(spec.prefill.endpoints.urls),
        decode_endpoints=list(spec.decode.endpoints.urls),
        prefill_discovery=_discovery(obs, PREFILL),
        decode_discovery=_discovery(obs, DECODE),
        prefill_handoff=published_handoff(spec.prefill.handoff),
    )
    return _versioned(candidate, previous), pending


def published_handoff(handoff: Handoff) -> Handoff | None:
    """A protocol other than the default, as the router reads it; the default: absent (the
    policies of clusters that declare none stay as they were)."""
    return None if handoff == Handoff() else handoff


def _versioned(
    candidate: RoutingPolicyStatus, previous: RoutingPolicyStatus | None
) -> RoutingPolicyStatus:
    """``candidate`` with the previous version, or the next one if its content differs."""
    if previous is None or previous.model_dump(exclude={"version"}) != candidate.model_dump(
        exclude={"version"}
    ):
        candidate = candidate.model_copy(
            update={"version": (previous.version + 1) if previous else 1}
        )
    return candidate


def with_pool_engines(
    policy: RoutingPolicyStatus, pool: str, ready: Sequence[str]
) -> RoutingPolicyStatus:
    """The published policy with ``pool``'s engines as they are now (a new version if they
    changed): engines come and go between plans, and while signals are stale too."""
    return with_pools_engines(policy, {pool: ready})


def with_pools_engines(
    policy: RoutingPolicyStatus, ready: Mapping[str, Sequence[str]]
) -> RoutingPolicyStatus:
    """``with_pool_engines`` for several pools at once: one new version at most."""
    routes = [
        r.model_copy(update={"endpoints": list(ready[r.name])}) if r.name in ready else r
        for r in policy.prefill_pools
    ]
    return _versioned(policy.model_copy(update={"prefill_pools": routes}), policy)


def _pool_endpoints(obs: Observation, previous: RoutingPolicyStatus | None) -> list[str]:
    """Fixed URLs, or the ready engines observed now, or (not known now: the pool's cluster
    did not answer) the ones last published: never an empty list for want of a reading."""
    assert obs.pool is not None and obs.usable_pool is not None
    declared = obs.usable_pool.endpoints
    if not declared.discovers:
        return list(declared.urls)
    if obs.pool.endpoints is not None:
        return list(obs.pool.endpoints)
    for route in previous.prefill_pools if previous else []:
        if route.name == obs.pool.link.name:
            return list(route.endpoints)
    return []


def _discovery(obs: Observation, group: GroupName) -> EndpointDiscovery | None:
    """Where the router finds a local group's engines: EndpointSlices in the namespace of the
    group's scale target, unless the CR may not name that namespace."""
    stage = obs.spec.prefill if group == PREFILL else obs.spec.decode
    ep, selector = stage.endpoints, stage.endpoints.label_selector()
    seen = obs.groups.get(group)
    if selector is None or (seen is not None and seen.reason == "TargetForbidden"):
        return None
    ns = stage.scale_target_ref.namespace or obs.namespace
    return EndpointDiscovery(namespace=ns, label_selector=selector, port=ep.port, scheme=ep.scheme)


def plan_status_of(p: Plan, at: str) -> PlanStatus:
    return PlanStatus(
        threshold_tokens=p.threshold_tokens,
        offload_fraction=p.offload_fraction,
        n_prfaas=p.n_prfaas,
        n_prefill=p.n_prefill,
        n_decode=p.n_decode,
        throughput_rps=round(p.throughput_rps, 4),
        stages=StagesStatus(
            prfaas=p.theta_prfaas, pd_prefill=p.theta_pd_prefill, pd_decode=p.theta_pd_decode
        ),
        egress_gbps=round(p.egress_gbps, 3),
        binding=p.binding,
        computed_at=at,
    )


def _plan_key(p: PlanStatus) -> tuple[Any, ...]:
    return (p.threshold_tokens, p.n_prfaas, p.n_prefill, p.n_decode)


def signals_status(s: Signals, at: str, mean_tokens: float | None = None) -> SignalsStatus:
    if mean_tokens is None:
        mean_tokens = s.workload.input_length.grid().mean()
    return SignalsStatus(
        source=s.source,
        arrival_rate_rps=s.arrival_rate_rps,
        mean_uncached_tokens=round(mean_tokens, 1),
        output_tokens=s.workload.output_tokens,
        egress_gbps=sum(s.egress_gbps.values()) if s.egress_gbps else None,
        observed_at=at,
    )
