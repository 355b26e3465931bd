"""One slow-loop pass for a PDCluster: observe → decide → act.

``observe`` reads the API servers and Prometheus, ``prfaas.slowloop.decide`` is pure, and ``act``
writes the ``/scale`` changes it allows, growth first. Synchronous: run it in a thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from prfaas.api.pdcluster import PDClusterSpec, PDClusterStatus, PoolLink
from prfaas.api.prefillpool import PrefillPoolStatus
from prfaas.controller.endpoints import PoolEndpoints
from prfaas.controller.fleet import (
    Listing,
    Objects,
    listing_of,
    read_namespace,
    reread_pools,
    size_pools,
    with_unseen_sizes,
)
from prfaas.controller.kube import Members, TargetError, UnreachableError
from prfaas.controller.memo import PlanMemo
from prfaas.controller.observe import ScaleHandle, observe
from prfaas.controller.signals import Query
from prfaas.controller.trust import Trust
from prfaas.slowloop.conditions import parse_conditions
from prfaas.slowloop.decide import (
    Decision,
    Outcome,
    decide,
    invalid_spec,
    published_handoff,
)
from prfaas.slowloop.fleet import Component, FleetOutcome, component, plan_component, with_workload
from prfaas.slowloop.fleet_member import PoolReach, decide_member
from prfaas.slowloop.observation import GroupName, Observation, PoolObservation, Signals
from prfaas.slowloop.safety import Change


@dataclass(frozen=True)
class Resource:
    """A PDCluster as the handlers hand it over: spec validated (or why not), status parsed."""

    name: str
    namespace: str
    generation: int | None
    spec: PDClusterSpec | ValidationError
    status: PDClusterStatus

    @classmethod
    def parse(
        cls,
        name: str,
        namespace: str,
        generation: int | None,
        raw_spec: Mapping[str, Any],
        raw_status: Mapping[str, Any] | None,
    ) -> Resource:
        spec: PDClusterSpec | ValidationError
        try:
            spec = PDClusterSpec.model_validate(raw_spec)
        except ValidationError as exc:
            spec = exc
        return cls(name, namespace, generation, spec, parse_status(raw_status))


def parse_status(raw: Mapping[str, Any] | None) -> PDClusterStatus:
    if not raw:
        return PDClusterStatus()
    try:
        return PDClusterStatus.model_validate(raw)
    except ValidationError:  # written by an older version: start afresh, keep conditions
        return PDClusterStatus(conditions=parse_conditions(raw.get("conditions")))


class Reconciler:
    def __init__(
        self,
        members: Members,
        query_factory: Callable[[str], Query],
        clock: Callable[[], datetime],
        dry_run: bool = False,
        trust: Trust | None = None,
    ) -> None:
        self.members = members
        self.query_factory = query_factory
        self.clock = clock
        self.dry_run = dry_run  # plan and report, never scale (operator-wide Observe)
        self.trust = trust or Trust()
        self.pool_endpoints = PoolEndpoints()  # pools' engines, watched in their clusters
        self.planner = PlanMemo()  # a scenario planned before is not searched again

    def reconcile(self, res: Resource, objects: Objects | None = None) -> Outcome:
        """One pass. ``objects``: the namespace's PrefillPools and PDClusters as the operator's
        watch has them (None: list them now)."""
        now = self.clock()
        if isinstance(res.spec, ValidationError):
            first = res.spec.errors()[0]
            where = ".".join(map(str, first["loc"]))
            return invalid_spec(res.status, res.generation, now, where, first["msg"])
        if objects is None:
            listing = read_namespace(self.members.local, res.namespace)
        else:
            listing = listing_of(objects)
        comp = component(listing.ns, cluster=res.name)
        if comp.is_fleet:
            self.pool_endpoints.release((res.namespace, res.name))  # its watches are per pool
            return self._in_fleet(res, res.spec, listing, comp, now)
        for link in res.spec.prefill_pools:  # no longer in a fleet: its per-pool watches go
            self.pool_endpoints.release((res.namespace, f"{res.name}/{link.name}"))
        obs, handles = observe(
            self.members,
            self.query_factory,
            self.trust,
            res.name,
            res.namespace,
            res.spec,
            self.pool_endpoints,
        )
        decision = decide(
            obs,
            res.status,
            now,
            res.generation,
            dry_run=self.dry_run,
            planner=self.planner,
            max_plan_cells=self.trust.max_plan_cells,
        )
        if not isinstance(decision, Decision):
            return _alone(decision)  # nothing to act on (stale signals, no plan)
        outcome = decision.outcome(act(decision.to_apply, handles))
        pool = decision.obs.pool
        if pool is not None and _pool_status_unchanged(outcome, pool.status):
            # as read this pass: no write (every PDCluster of a pool wrote it on every pass)
            outcome = replace(outcome, pool_status=None)
        return _alone(outcome)

    def _in_fleet(
        self, res: Resource, spec: PDClusterSpec, listing: Listing, comp: Component, now: datetime
    ) -> Outcome:
        """A member of a fleet: its own groups from the joint plan (alone, local only, when no
        pool of the fleet can be used); the lead also sizes the fleet's pools (their one
        writer)."""
        alone = spec.model_copy(update={"prefill_pools": []})  # pools are not its to read
        obs, handles = observe(
            self.members, self.query_factory, self.trust, res.name, res.namespace, alone
        )
        ns = with_unseen_sizes(self.members, self.trust, listing, res.namespace, comp)
        if isinstance(obs.signals, Signals):  # its own demand as measured now (then published)
            ns = with_workload(ns, res.name, obs.signals.workload)
        fleet = plan_component(ns, comp)
        if (
            fleet.plan is None
            and all(p in fleet.without for p in comp.pools)
            and spec.prefill_pools
        ):
            outcome = self._local_only(res, obs, handles, fleet, now)
        else:
            pools = tuple(self._reach(res, link, listing, fleet) for link in spec.prefill_pools)
            decision = decide_member(
                replace(obs, spec=spec), res.status, now, res.generation, fleet, pools,
                dry_run=self.dry_run,
            )  # fmt: skip
            outcome = (
                decision
                if isinstance(decision, Outcome)
                else decision.outcome(act(decision.to_apply, handles))
            )
        if listing.lead(comp) == res.name:
            view = reread_pools(self.members.local, res.namespace, replace(listing, ns=ns),
                                comp.pools)  # fmt: skip
            outcome.pools = size_pools(
                self.members,
                self.trust,
                view,
                res.namespace,
                comp,
                lambda seen: plan_component(seen, comp),
                now,
                self.dry_run,
            )
        return outcome

    def _local_only(
        self,
        res: Resource,
        obs: Observation,
        handles: Mapping[GroupName, ScaleHandle],
        fleet: FleetOutcome,
        now: datetime,
    ) -> Outcome:
        """No pool of its fleet can be used: planned alone, local prefill only, as a PDCluster
        without a pool is (and says why); its demand is still published for the fleet."""
        assert not isinstance(res.spec, ValidationError)
        link = res.spec.prefill_pools[0]
        why = "; ".join(f"PrefillPool {p}: {w}" for p, w in sorted(fleet.without.items())
                        if p in {x.name for x in res.spec.prefill_pools})  # fmt: skip
        problem = ("PrefillPoolUnusable", f"{why}; planned without them, local prefill only")
        local = replace(obs, pool=PoolObservation(link, None, problem))
        decision = decide(local, res.status, now, res.generation, dry_run=self.dry_run,
                          max_plan_cells=self.trust.max_plan_cells)  # fmt: skip
        outcome = (
            decision
            if not isinstance(decision, Decision)
            else decision.outcome(act(decision.to_apply, handles))
        )
        if isinstance(obs.signals, Signals):
            update = {"workload": obs.signals.workload, "pool_shares": []}
            outcome.status = outcome.status.model_copy(update=update)
        return outcome

    def _reach(
        self, res: Resource, link: PoolLink, listing: Listing, fleet: FleetOutcome
    ) -> PoolReach:
        """A listed pool's engines to publish (None: planned without it)."""
        budget = link.link.budget_gbps
        spec = listing.pool_specs.get(link.name)
        user = (res.namespace, f"{res.name}/{link.name}")
        if spec is None or link.name in fleet.without:
            self.pool_endpoints.release(user)
            return PoolReach(link.name, None, budget)
        handoff = published_handoff(spec.handoff)
        if not spec.endpoints.discovers:
            return PoolReach(link.name, tuple(spec.endpoints.urls), budget, False, handoff)
        where = spec.scale_target_ref.namespace or res.namespace
        previous = res.status.routing_policy
        last = next((tuple(r.endpoints) for r in (previous.prefill_pools if previous else [])
                     if r.name == link.name), ())  # fmt: skip
        if self.trust.target_refusal(res.namespace, where) is not None:
            return PoolReach(link.name, (), budget, True, handoff)
        try:
            cluster = self.members.for_placement(spec.placement, res.namespace)
        except UnreachableError:
            return PoolReach(link.name, last, budget, True, handoff)
        ready = self.pool_endpoints.ready(user, cluster, where, spec.endpoints)
        return PoolReach(link.name, last if ready is None else tuple(ready), budget, True, handoff)


def _pool_status_unchanged(outcome: Outcome, seen: PrefillPoolStatus | None) -> bool:
    """Whether the pool status this pass would write (as the handlers write it: planned by
    this PDCluster, no fleet fields) is what was read."""
    if outcome.pool_status is None or seen is None:
        return False
    fields = {"planned_by": "PDCluster", "users": None, "scaled_at": None}
    written = outcome.pool_status.model_copy(
        update={**fields, "contested_generation": seen.contested_generation}  # not written
    )
    return written == seen


def _alone(outcome: Outcome) -> Outcome:
    """A cluster planned alone: no fleet fields left from when it was in a fleet."""
    outcome.status = outcome.status.model_copy(update={"pool_shares": None, "workload": None})
    return outcome


def act(changes: list[Change], handles: Mapping[GroupName, ScaleHandle]) -> dict[str, str]:
    """Write each change (growth first, as given); returns group → error for those that failed."""
    failed: dict[str, str] = {}
    for change in changes:
        try:
            handles[change.group].set_replicas(change.next)  # type: ignore[index]
        except (UnreachableError, TargetError) as exc:
            failed[change.group] = str(exc)
    return failed


def merge_patch(stored: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``stored`` into ``new``: what ``new`` no
    longer has is sent as null. Patching ``new`` alone keeps such keys, and a field that became
    empty (a threshold no longer offloading) stayed behind: every pass then saw a changed routing
    policy and bumped its version. Lists are replaced whole, as a merge patch does."""
    patch = dict(new)
    for key, old in (stored or {}).items():
        if key not in new:
            patch[key] = None
        elif isinstance(old, Mapping) and isinstance(new[key], Mapping):
            patch[key] = merge_patch(old, new[key])
    return patch


def routing_configmap(policy: Mapping[str, Any]) -> dict[str, str]:
    """The routing policy as a file for routers in a member cluster (mounted ConfigMap)."""
    return {"policy.json": json.dumps(policy, sort_keys=True)}
