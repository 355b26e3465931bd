"""One slow-loop pass of a PDCluster that is part of a fleet (pure).

Like ``decide``, but the plan is this cluster's row of the fleet's joint plan
(``slowloop.fleet``): the cluster scales only its own prefill and decode groups (each pool is
sized by its own reconcile, ``slowloop.fleet_pool``), publishes one route per pool it has a share
of (the pools it reaches without a share are standby routes), and its status says its share of
each pool and the workload every planner of the fleet plans it from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from prfaas.api.common import Handoff
from prfaas.api.pdcluster import (
    PDClusterStatus,
    PendingThresholdStatus,
    PlanStatus,
    PoolRoute,
    PoolShareStatus,
    ReplicasStatus,
    RoutingPolicyStatus,
    ScaledAtStatus,
)
from prfaas.model.fleet_planner import ClusterPlan, PoolShare
from prfaas.model.planner import Plan
from prfaas.slowloop.decide import (
    _SCALED_FIELD,
    Outcome,
    Phase,
    _contested,
    _counts,
    _discovery,
    _floors,
    _groups,
    _holding,
    _plan_key,
    _problems,
    _Report,
    _report_contest,
    _versioned,
    plan_applied,
    plan_status_of,
    record_failures,
    signals_status,
    still_pending,
)
from prfaas.slowloop.fleet import FleetOutcome
from prfaas.slowloop.observation import DECODE, PREFILL, GroupName, Observation, Signals
from prfaas.slowloop.safety import Change, safe_changes
from prfaas.slowloop.threshold import hold


@dataclass(frozen=True)
class PoolReach:
    """A pool this cluster lists, as its pass found it: ``endpoints`` to publish, and its link
    budget; ``None`` endpoints: the pool is not usable now (not planned with)."""

    name: str
    endpoints: tuple[str, ...] | None
    link_budget_gbps: float
    discovered: bool = False  # endpoints resolved from the pool's EndpointSlices
    handoff: Handoff | None = None  # the pool's P/D protocol as published (None: the default)


def plan_of(cp: ClusterPlan) -> Plan:
    """The cluster's row of the fleet plan in the single-cluster planner's terms."""
    p = cp.offload_fraction
    busy = sum(s.instances for s in cp.shares)
    return Plan(
        kind="prfaas" if cp.shares else "homogeneous",
        throughput_rps=cp.throughput_rps,
        threshold_tokens=cp.threshold_tokens,
        offload_fraction=p,
        l_long=cp.l_long,
        l_short=cp.l_short,
        n_prfaas=math.ceil(busy - 1e-9),
        n_prefill=cp.n_prefill,
        n_decode=cp.n_decode,
        theta_prfaas=cp.throughput_rps if cp.shares else None,
        theta_pd_prefill=cp.pd_prefill_rps * (1 - p) if math.isfinite(cp.pd_prefill_rps) else None,
        theta_pd_decode=cp.pd_decode_rps,
        theta_prfaas_compute=cp.throughput_rps / busy * math.ceil(busy - 1e-9) if busy else None,
        theta_prfaas_egress=None,
        egress_gbps=cp.egress_gbps,
        link_budget_gbps=sum(s.link_budget_gbps for s in cp.shares),
        binding="pd-decode" if cp.limit != "pools" else "prfaas-compute",
        cost_per_hour=None,
    )


@dataclass
class MemberDecision:
    """The member's changes (its own groups) and, once made, its status (``outcome``)."""

    obs: Observation
    report: _Report
    now: datetime
    signals: Signals
    target: Plan
    row: ClusterPlan
    pools: tuple[PoolReach, ...]
    changes: list[Change]
    enforce: bool
    dry_run: bool

    @property
    def to_apply(self) -> list[Change]:
        return [c for c in self.changes if c.acts] if self.enforce else []

    def outcome(self, failed: Mapping[str, str] | None = None) -> Outcome:
        failed = failed or {}
        r = self.report
        applied = record_failures(r, self.to_apply, failed)
        after, stamps = self._after(applied)
        policy, pending = self._policy()
        plan_status = self._plan_status()
        waiting = still_pending(self.changes, self.enforce, failed)
        plan_applied(r, waiting, self.enforce, self.dry_run,
                     "its prefill and decode are at the fleet plan")  # fmt: skip
        r.close_degraded()
        r.cond("Ready", "True", "Planned", f"fleet plan from {self.signals.source} signals")
        phase: Phase = (
            "Degraded" if r.problems else ("Applied" if self.enforce and not waiting else "Planned")
        )
        scaled = (r.old.scaled_at or ScaledAtStatus()).model_copy(update=stamps)
        status = r.status(
            phase,
            plan=plan_status,
            routing_policy=policy,
            signals=signals_status(self.signals, r.at),
            replicas=ReplicasStatus(
                **{_SCALED_FIELD[g]: v for g, v in after.items() if v is not None}
            ),
            scaled_at=scaled,
            last_applied_time=r.at if applied else None,
            pool_shares=[_share(s, self.row.threshold_tokens) for s in self.row.shares],
            workload=self.signals.workload,
        ).model_copy(update={"pending_threshold": pending, "contested": r.contested})
        return Outcome(status, r.events, applied)

    def _after(self, applied: list[Change]) -> tuple[dict[GroupName, int | None], dict[str, str]]:
        """Counts after the applied changes, and the groups' new scale stamps."""
        r = self.report
        after = _counts(self.obs, r.old)
        stamps: dict[str, str] = {}
        for c in applied:
            after[c.group] = c.next  # type: ignore[index]
            stamps[_SCALED_FIELD[c.group]] = r.at  # type: ignore[index]
            r.event("Normal", "Scaled", f"{c.group} {c.current} → {c.next} "
                    f"(fleet plan {c.desired}; {c.reason})")  # fmt: skip
        return after, stamps

    def _plan_status(self) -> PlanStatus:
        r, row = self.report, self.row
        plan_status = plan_status_of(self.target, r.at)
        if r.old.plan is None or _plan_key(r.old.plan) != _plan_key(plan_status):
            shares = ", ".join(f"{s.pool} {s.fraction:.0%}" for s in row.shares) or "none"
            r.event("Normal", "Planned", f"fleet: t={row.threshold_tokens} N_p={row.n_prefill} "
                    f"N_d={row.n_decode} Λ={row.throughput_rps:.2f} req/s; "
                    f"pools: {shares}")  # fmt: skip
        return plan_status

    def _policy(self) -> tuple[RoutingPolicyStatus, PendingThresholdStatus | None]:
        r, old = self.report, self.report.old
        previous = old.routing_policy
        shared = {s.pool for s in self.row.shares}
        threshold: int | None = None
        pending: PendingThresholdStatus | None = None
        routes: list[PoolRoute] = []
        if shared and self.row.threshold_tokens is not None:
            kept = previous.threshold_tokens if previous else None
            threshold, pending = hold(
                self.obs.spec, kept, self.row.threshold_tokens, old.pending_threshold, self.now
            )
            for p in self.pools:
                if p.endpoints is None:
                    continue  # planned without it: not routed to
                routes.append(
                    PoolRoute(
                        name=p.name,
                        endpoints=list(p.endpoints),
                        link_budget_gbps=p.link_budget_gbps,
                        standby=None if p.name in shared else True,
                        handoff=p.handoff,
                        discovered=p.discovered or None,
                    )
                )
        spec = self.obs.spec
        candidate = RoutingPolicyStatus(
            version=previous.version if previous else 0,
            threshold_tokens=threshold,
            prefill_pools=routes,
            prefill_endpoints=list(spec.prefill.endpoints.urls),
            decode_endpoints=list(spec.decode.endpoints.urls),
            prefill_discovery=_discovery(self.obs, PREFILL),
            decode_discovery=_discovery(self.obs, DECODE),
        )
        policy = _versioned(candidate, previous)
        if previous is None or policy.version != previous.version:
            pools = ", ".join(
                f"{p.name}{' (standby)' if p.standby else ''}" for p in policy.prefill_pools
            )
            r.event("Normal", "RoutingPolicy", f"v{policy.version}: threshold "
                    f"{policy.threshold_tokens} tokens; pools: {pools or 'none'}")  # fmt: skip
        return policy, pending


def _share(s: PoolShare, threshold: int | None) -> PoolShareStatus:
    return PoolShareStatus(
        pool=s.pool,
        fraction=round(min(max(s.fraction, 0.0), 1.0), 4),
        rate_rps=round(s.rate_rps, 4),
        instances=round(s.instances, 4),
        egress_gbps=round(s.egress_gbps, 4),
        threshold_tokens=threshold,
    )


def decide_member(
    obs: Observation,
    old: PDClusterStatus,
    now: datetime,
    generation: int | None,
    fleet: FleetOutcome,
    pools: tuple[PoolReach, ...],
    *,
    dry_run: bool = False,
) -> MemberDecision | Outcome:
    """``obs``: the cluster's own groups and signals (no pool group: pools have their writer)."""
    r = _Report(old, generation, now)
    r.problems = _problems(obs, old)
    for p in pools:
        why = fleet.without.get(p.name)
        if why is not None:
            r.problems.append(("PrefillPoolUnusable", f"PrefillPool {p.name}: {why}; planned "
                               "without it"))  # fmt: skip
    signals = obs.signals
    if not isinstance(signals, Signals):
        return _holding(r, signals, obs)
    r.cond("SignalsStale", "False", "Fresh", f"{signals.source} signals")
    row = fleet.cluster(obs.name)
    if row is None:
        why = fleet.error or fleet.without.get(obs.name) or "not in the fleet plan"
        r.problems.append(("PlanFailed", f"fleet plan: {why}"))
        r.cond("Ready", "False", "PlanFailed", why)
        r.cond("PlanApplied", "False", "Holding", "no plan")
        r.close_degraded()
        status = r.status("Degraded").model_copy(update={"workload": signals.workload})
        return Outcome(status, r.events)
    target = plan_of(row)
    targets: dict[str, int] = {PREFILL: row.n_prefill, DECODE: row.n_decode}
    contested = _contested(obs, old, generation, targets)
    spec = obs.spec
    changes = safe_changes(
        _groups(obs, old, _floors(signals.arrival_rate_rps, target), contested),
        targets,
        spec.policy.max_step,
        timedelta(seconds=spec.policy.cooldown_seconds),
        now,
        shared=(PREFILL, DECODE, spec.instances),
    )
    _report_contest(r, old, obs, contested)
    enforce = spec.policy.mode == "Enforce" and not dry_run
    return MemberDecision(obs, r, now, signals, target, row, pools, changes, enforce, dry_run)
