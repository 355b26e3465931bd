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

from prfaas.api.pdcluster import PDClusterSpec, PDClusterStatus
from prfaas.controller.endpoints import PoolEndpoints
from prfaas.controller.kube import Members, TargetError, UnreachableError
from prfaas.controller.memo import PlanMemo
from prfaas.controller.observe import ScaleHandle, observe
from prfaas.controller.signals import Query
from prfaas.controller.trust import Trust
from prfaas.slowloop.conditions import parse_conditions
from prfaas.slowloop.decide import Decision, Outcome, decide, invalid_spec
from prfaas.slowloop.observation import GroupName
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

    def reconcile(self, res: Resource) -> Outcome:
        now = self.clock()
        if isinstance(res.spec, ValidationError):
            first = res.spec.errors()[0]
            where = ".".join(map(str, first["loc"]))
            return invalid_spec(res.status, res.generation, now, where, first["msg"])
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
            return decision  # nothing to act on (stale signals, no plan)
        outcome = decision.outcome(act(decision.to_apply, handles))
        pool = decision.obs.pool
        if pool is not None and outcome.pool_status == pool.status:
            # as read this pass: no write (every PDCluster of a shared pool wrote it each pass)
            outcome = replace(outcome, pool_status=None)
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
