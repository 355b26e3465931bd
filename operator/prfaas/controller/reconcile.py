"""One slow-loop pass for a PDCluster: observe, plan, act within the safety rules, report.

Synchronous (run it in a thread); everything it writes is returned in ``Outcome`` except the
``/scale`` patches, which it applies itself in ``Enforce`` mode, growth first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from prfaas.api.common import Placement, ReplicaBounds, ScaleTargetRef
from prfaas.api.pdcluster import (
    PDClusterSpec,
    PDClusterStatus,
    PlanStatus,
    PoolRoute,
    ReplicasStatus,
    RoutingPolicyStatus,
    ScaledAtStatus,
    SignalsStatus,
    StagesStatus,
)
from prfaas.api.planning import scenario_for
from prfaas.api.prefillpool import PrefillPoolSpec
from prfaas.controller.actions import Change, Group, decide, floor_for
from prfaas.controller.conditions import Status, set_condition
from prfaas.controller.kube import Cluster, Members, TargetError, UnreachableError
from prfaas.controller.signals import Query, Signals, SignalsUnavailableError, gather
from prfaas.model.planner import Plan, PlanError, plan
from prfaas.model.scenario import PDSpec, PoolSpec, Scenario

POOL, PREFILL, DECODE = "prefillPool", "prefill", "decode"
_FIELD = {POOL: "prefill_pool", PREFILL: "prefill", DECODE: "decode"}


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    applied: list[Change] = field(default_factory=list)
    pool_status: dict[str, Any] | None = None
    pool_name: str | None = None


@dataclass
class _Target:
    group: str
    cluster: Cluster | None  # None: could not be reached
    ref: ScaleTargetRef
    namespace: str
    current: int | None
    error: str | None = None


def _iso(t: datetime) -> str:
    return t.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class Reconciler:
    def __init__(
        self,
        members: Members,
        query_factory: Callable[[str], Query],
        clock: Callable[[], datetime],
        dry_run: bool = False,
    ) -> None:
        self.members = members
        self.query_factory = query_factory
        self.clock = clock
        self.dry_run = dry_run  # plan and report, never scale (operator-wide Observe)

    # -- observation -------------------------------------------------------------------------
    def _target(self, group: str, placement: Placement, ref: ScaleTargetRef, ns: str) -> _Target:
        try:
            cluster = self.members.for_placement(placement, ns)
        except UnreachableError as exc:
            return _Target(group, None, ref, ns, None, str(exc))
        try:
            return _Target(group, cluster, ref, ns, cluster.get_replicas(ref, ns))
        except UnreachableError as exc:
            return _Target(group, None, ref, ns, None, str(exc))
        except TargetError as exc:
            return _Target(group, cluster, ref, ns, None, str(exc))

    # -- the pass ----------------------------------------------------------------------------
    def reconcile(
        self,
        name: str,
        namespace: str,
        generation: int | None,
        raw_spec: dict[str, Any],
        raw_status: dict[str, Any] | None,
    ) -> Outcome:
        now = self.clock()
        old = _old_status(raw_status)
        conditions: list[dict[str, Any]] = (
            list(raw_status.get("conditions") or []) if raw_status else []
        )

        def cond(ctype: str, status: Status, reason: str, message: str = "") -> None:
            nonlocal conditions
            conditions = set_condition(
                conditions, ctype, status, reason, message, generation, _iso(now)
            )

        def finish(phase: str, **parts: Any) -> dict[str, Any]:
            merged = old.model_dump(by_alias=True, exclude_none=True, mode="json")
            merged.pop("conditions", None)
            merged.update({k: v for k, v in parts.items() if v is not None})
            merged.update(observedGeneration=generation, phase=phase, conditions=conditions)
            return PDClusterStatus.model_validate(merged).model_dump(
                by_alias=True, exclude_none=True, mode="json"
            )

        try:
            spec = PDClusterSpec.model_validate(raw_spec)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"]))
            cond("Ready", "False", "InvalidSpec", f"spec.{where}: {first['msg']}")
            return Outcome(finish("Degraded"), [("Warning", "InvalidSpec", f"spec.{where}")])

        events: list[tuple[str, str, str]] = []
        degraded: list[tuple[str, str]] = []  # (condition reason, message)

        # the PrefillPool (first link; one pool per PD cluster in v1alpha1)
        pool_spec: PrefillPoolSpec | None = None
        link = spec.prefill_pools[0] if spec.prefill_pools else None
        if link is not None:
            raw_pool = self.members.local.get_custom("prefillpools", namespace, link.name)
            if raw_pool is None:
                degraded.append(("PrefillPoolNotFound", f"PrefillPool {link.name} not found"))
            else:
                try:
                    pool_spec = PrefillPoolSpec.model_validate(raw_pool.get("spec") or {})
                except ValidationError:
                    degraded.append(
                        ("PrefillPoolInvalid", f"PrefillPool {link.name} has an invalid spec")
                    )

        targets = [
            self._target(PREFILL, spec.placement, spec.prefill.scale_target_ref, namespace),
            self._target(DECODE, spec.placement, spec.decode.scale_target_ref, namespace),
        ]
        if pool_spec is not None:
            targets.append(
                self._target(POOL, pool_spec.placement, pool_spec.scale_target_ref, namespace)
            )
        by_group = {t.group: t for t in targets}
        for t in targets:
            if t.error:
                reason = "Unreachable" if t.cluster is None else "TargetInvalid"
                degraded.append((reason, f"{t.group}: {t.error}"))

        # signals; stale → hold the last good plan, change nothing
        try:
            signals = gather(spec.workload, self.query_factory)
        except SignalsUnavailableError as exc:
            was_stale = any(
                c.get("type") == "SignalsStale" and c.get("status") == "True" for c in conditions
            )
            cond("SignalsStale", "True", exc.reason, str(exc))
            cond("Ready", "False", "SignalsStale", "holding the last good plan")
            cond("PlanApplied", "False", "Holding", "signals are stale: no changes")
            self._degraded(cond, degraded)
            if not was_stale:
                events.append(("Warning", "SignalsStale", f"{exc}; holding the last good plan"))
            return Outcome(finish("Holding"), events)
        cond("SignalsStale", "False", "Fresh", f"{signals.source} signals")

        # plan the target, and the threshold for what runs now
        pool_now = by_group[POOL].current if POOL in by_group else None
        try:
            target_plan, scenario = self._plan(name, spec, link, pool_spec, pool_now, signals)
        except PlanError as exc:
            degraded.append(("PlanFailed", f"plan failed: {exc}"))
            cond("Ready", "False", "PlanFailed", str(exc))
            cond("PlanApplied", "False", "Holding", "no plan")
            self._degraded(cond, degraded)
            return Outcome(finish("Degraded"), events)

        targets_n = {PREFILL: target_plan.n_prefill, DECODE: target_plan.n_decode}
        if pool_spec is not None:
            targets_n[POOL] = target_plan.n_prfaas
        current = {g: t.current for g, t in by_group.items()}
        now_plan = (
            _plan_for_counts(scenario, current) if pool_spec is None or current.get(POOL) else None
        )
        floors = _floors(signals.arrival_rate_rps, now_plan, current)

        scaled_at = old.scaled_at or ScaledAtStatus()
        groups = []
        for g, t in by_group.items():
            bounds = (
                spec.prefill.replicas
                if g == PREFILL
                else spec.decode.replicas
                if g == DECODE
                else pool_spec.replicas  # type: ignore[union-attr]
            )
            observed = t.current
            if observed is None:  # unknown: hold it where it was last seen
                observed = getattr(old.replicas or ReplicasStatus(), _FIELD[g]) or bounds.min
            groups.append(
                Group(
                    name=g,
                    current=observed,
                    min=bounds.min,
                    max=bounds.max,
                    floor=floors.get(g, 0),
                    reachable=t.cluster is not None and t.current is not None,
                    last_change=_parse_time(getattr(scaled_at, _FIELD[g])),
                )
            )
        changes = decide(
            groups,
            targets_n,
            spec.policy.max_step,
            timedelta(seconds=spec.policy.cooldown_seconds),
            now,
            shared=(PREFILL, DECODE, spec.instances),
        )

        enforce = spec.policy.mode == "Enforce" and not self.dry_run
        applied: list[Change] = []
        scaled = scaled_at.model_dump(by_alias=False)
        after = dict(current)
        for change in changes:
            if not change.acts:
                continue
            if not enforce:
                continue
            t = by_group[change.group]
            assert t.cluster is not None
            try:
                t.cluster.set_replicas(t.ref, t.namespace, change.next)
            except (UnreachableError, TargetError) as exc:
                degraded.append(("ScaleFailed", f"{change.group}: scaling failed: {exc}"))
                continue
            applied.append(change)
            after[change.group] = change.next
            scaled[_FIELD[change.group]] = _iso(now)
            events.append(
                (
                    "Normal",
                    "Scaled",
                    f"{change.group} {change.current} → {change.next} "
                    f"(plan {change.desired}; {change.reason})",
                )
            )

        # routing policy: the threshold for the counts that will run after this step
        routed_plan = now_plan if not applied else _plan_for_counts(scenario, after)
        policy = self._routing(spec, pool_spec, link, routed_plan, target_plan, old)
        if old.routing_policy is None or policy.version != old.routing_policy.version:
            events.append(
                (
                    "Normal",
                    "RoutingPolicy",
                    f"v{policy.version}: threshold {policy.threshold_tokens} tokens",
                )
            )
        plan_status = _plan_status(target_plan, _iso(now))
        if old.plan is None or _plan_key(old.plan) != _plan_key(plan_status):
            events.append(
                (
                    "Normal",
                    "Planned",
                    f"t={target_plan.threshold_tokens} N_prfaas={target_plan.n_prfaas} "
                    f"N_p={target_plan.n_prefill} N_d={target_plan.n_decode} "
                    f"Λ={target_plan.throughput_rps:.2f} req/s ({target_plan.binding}-bound)",
                )
            )

        pending = [c for c in changes if c.next != c.desired or (c.acts and not enforce)]
        if self.dry_run:
            cond(
                "PlanApplied",
                "False",
                "DryRun",
                "the operator runs with --dry-run: nothing is scaled",
            )
        elif not enforce:
            cond("PlanApplied", "False", "Observe", "policy.mode is Observe: nothing is scaled")
        elif pending:
            reasons = "; ".join(f"{c.group}: {c.reason}" for c in pending)
            cond("PlanApplied", "False", "InProgress", reasons)
        else:
            cond("PlanApplied", "True", "AtPlan", "every group is at its planned size")
        self._degraded(cond, degraded)
        cond("Ready", "True", "Planned", f"plan from {signals.source} signals")
        phase = "Degraded" if degraded else ("Applied" if enforce and not pending else "Planned")

        status = finish(
            phase,
            plan=plan_status.model_dump(by_alias=True, exclude_none=True, mode="json"),
            routingPolicy=policy.model_dump(by_alias=True, exclude_none=True, mode="json"),
            signals=_signals_status(signals, _iso(now)).model_dump(by_alias=True, mode="json"),
            replicas=ReplicasStatus(
                **{_FIELD[g]: v for g, v in after.items() if v is not None}
            ).model_dump(by_alias=True, exclude_none=True),
            scaledAt=ScaledAtStatus(**scaled).model_dump(by_alias=True, exclude_none=True),
            lastAppliedTime=_iso(now) if applied else None,
        )
        pool_status = None
        if pool_spec is not None:
            pool_change = next(c for c in changes if c.group == POOL)
            pool_status = {
                "observedGeneration": None,
                "replicas": after.get(POOL),
                "desiredReplicas": pool_change.desired,
                "phase": "Ready" if by_group[POOL].cluster is not None else "Degraded",
            }
        return Outcome(status, events, applied, pool_status, link.name if link else None)

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _degraded(cond: Callable[..., None], degraded: list[tuple[str, str]]) -> None:
        if degraded:  # the first problem names the reason; the message lists them all
            cond("Degraded", "True", degraded[0][0], "; ".join(m for _, m in degraded))
        else:
            cond("Degraded", "False", "AllReachable", "")

    def _plan(
        self,
        name: str,
        spec: PDClusterSpec,
        link: Any,
        pool: PrefillPoolSpec | None,
        pool_now: int | None,
        signals: Signals,
    ) -> tuple[Plan, Scenario]:
        if pool is None or link is None:
            # no usable PrefillPool: plan the local cluster alone (the homogeneous split)
            scenario = scenario_for(
                name, spec, "none", _no_pool(spec), 1, _dummy_link(), signals.workload
            )
            scenario = scenario.model_copy(
                update={
                    "planner": scenario.planner.model_copy(
                        update={"homogeneous_instances": spec.instances}
                    )
                }
            )
            return plan(scenario).homogeneous, scenario
        scenario = scenario_for(
            name,
            spec,
            link.name,
            pool,
            pool_now if pool_now is not None else pool.replicas.min,
            link.link,
            signals.workload,
        )
        return plan(scenario).prfaas, scenario

    def _routing(
        self,
        spec: PDClusterSpec,
        pool: PrefillPoolSpec | None,
        link: Any,
        routed: Plan | None,
        target: Plan,
        old: PDClusterStatus,
    ) -> RoutingPolicyStatus:
        threshold = None
        pools: list[PoolRoute] = []
        if pool is not None and link is not None and routed is not None and routed.n_prfaas > 0:
            threshold = routed.threshold_tokens
            kept = old.routing_policy.threshold_tokens if old.routing_policy else None
            band = spec.policy.threshold.deadband_fraction
            auto = spec.policy.threshold.mode == "Auto"
            if (
                auto
                and threshold is not None
                and kept is not None
                and abs(threshold - kept) <= band * kept
            ):
                threshold = kept  # within the deadband: not worth a new policy version
            pools = [
                PoolRoute(
                    name=link.name,
                    endpoints=list(pool.endpoints.urls),
                    link_budget_gbps=link.link.budget_gbps,
                )
            ]
        previous = old.routing_policy
        candidate = RoutingPolicyStatus(
            version=previous.version if previous else 0,
            threshold_tokens=threshold,
            prefill_pools=pools,
            prefill_endpoints=list(spec.prefill.endpoints.urls),
            decode_endpoints=list(spec.decode.endpoints.urls),
        )
        if previous is None or previous.model_dump(exclude={"version"}) != candidate.model_dump(
            exclude={"version"}
        ):
            candidate = candidate.model_copy(
                update={"version": (previous.version + 1) if previous else 1}
            )
        return candidate


def routing_configmap(policy: dict[str, Any]) -> dict[str, str]:
    """The routing policy as a file for routers in a member cluster (mounted ConfigMap)."""
    return {"policy.json": json.dumps(policy, sort_keys=True)}


def _old_status(raw: dict[str, Any] | None) -> PDClusterStatus:
    if not raw:
        return PDClusterStatus()
    try:
        return PDClusterStatus.model_validate(raw)
    except ValidationError:  # written by an older version: start afresh, keep conditions
        return PDClusterStatus()


def _no_pool(spec: PDClusterSpec) -> PrefillPoolSpec:
    return PrefillPoolSpec(
        datacenter=spec.datacenter,
        instance=spec.instance,
        replicas=ReplicaBounds(min=0, max=1),
        scale_target_ref=spec.prefill.scale_target_ref,
    )


def _dummy_link() -> Any:
    from prfaas.model.profiles import LinkProfile

    return LinkProfile(capacity_gbps=1_000_000)


def _plan_for_counts(scenario: Scenario, counts: dict[str, int | None]) -> Plan | None:
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
        result = plan(fixed)
    except PlanError:
        return None
    return result.prfaas if n_pool else result.homogeneous


def _floors(rate: float | None, now: Plan | None, counts: dict[str, int | None]) -> dict[str, int]:
    """Instances each group needs for the traffic routed at the current threshold."""
    if not rate or now is None:
        return {}
    floors: dict[str, int] = {}
    p = now.offload_fraction
    if now.n_decode:
        floors[DECODE] = floor_for(rate, now.theta_pd_decode / now.n_decode)
    if now.n_prefill and now.theta_pd_prefill:
        floors[PREFILL] = floor_for(rate, now.theta_pd_prefill / now.n_prefill, 1 - p)
    if now.n_prfaas and now.theta_prfaas_compute:
        floors[POOL] = floor_for(rate, now.theta_prfaas_compute / now.n_prfaas, p)
    return floors


def _plan_status(p: Plan, at: str) -> PlanStatus:
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


def _signals_status(s: Signals, at: str) -> SignalsStatus:
    grid = s.workload.input_length.grid()
    return SignalsStatus(
        source=s.source,
        arrival_rate_rps=s.arrival_rate_rps,
        mean_uncached_tokens=round(grid.mean(), 1),
        output_tokens=s.workload.output_tokens,
        egress_gbps=sum(s.egress_gbps.values()) if s.egress_gbps else None,
        observed_at=at,
    )
