"""The operator's fleet edge: read a namespace's PDClusters and PrefillPools, and size shared
pools (observe → ``slowloop.fleet_pool`` → act).

Every PDCluster pass reads its namespace and plans its component (``slowloop.fleet``,
memoised). The operator reads the namespace from its watch (kopf indices: no API call per pass);
without one (in-process use) it lists it (two list calls). The pools of a fleet are sized by one
writer: the pass of the fleet's *lead* PDCluster (the first by name whose spec is valid), a
deterministic choice every pass makes alike, after its own pass and from the same plan; the lead
reads each pool it sizes again from the API server first (``reread_pools``): a watch may lag,
and cooldowns and a deleted pool must be seen as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from prfaas.api.pdcluster import PDCluster, PDClusterSpec, PDClusterStatus
from prfaas.api.prefillpool import PrefillPool, PrefillPoolSpec, PrefillPoolStatus
from prfaas.controller.kube import Cluster, Members, TargetError, UnreachableError
from prfaas.controller.observe import _read_scale
from prfaas.controller.trust import Trust
from prfaas.model.workload import Workload
from prfaas.slowloop.decide import Event
from prfaas.slowloop.fleet import ClusterInput, Component, FleetOutcome, Namespace, PoolInput
from prfaas.slowloop.fleet_pool import decide_pool
from prfaas.slowloop.observation import GroupObservation

log = logging.getLogger("prfaas.operator")


@dataclass
class Listing:
    """A namespace's PDClusters and PrefillPools as read now."""

    ns: Namespace
    pool_specs: dict[str, PrefillPoolSpec]
    pool_status: dict[str, PrefillPoolStatus]
    pool_generation: dict[str, int | None]
    cluster_specs: dict[str, PDClusterSpec] = field(default_factory=dict)

    def lead(self, comp: Component) -> str | None:
        """The PDCluster that sizes the component's pools."""
        return next((c for c in comp.clusters if c in self.cluster_specs), None)


@dataclass(frozen=True)
class Objects:
    """A namespace's PrefillPools and PDClusters as the API server returns them (plain dicts,
    read only), from a list call or the operator's watch."""

    pools: tuple[Mapping[str, Any], ...]
    clusters: tuple[Mapping[str, Any], ...]


def read_namespace(local: Cluster, namespace: str) -> Listing:
    """The namespace as listed now (two API calls)."""
    return listing_of(
        Objects(
            tuple(local.list_custom(PrefillPool.resource.plural, namespace)),
            tuple(local.list_custom(PDCluster.resource.plural, namespace)),
        )
    )


def listing_of(objects: Objects) -> Listing:
    pools: dict[str, PoolInput] = {}
    specs: dict[str, PrefillPoolSpec] = {}
    statuses: dict[str, PrefillPoolStatus] = {}
    generations: dict[str, int | None] = {}
    for raw in objects.pools:
        name = str((raw.get("metadata") or {}).get("name"))
        spec, status = _read_pool(raw, name, specs, statuses, generations)
        pools[name] = PoolInput(spec, status.replicas, _degraded(status))
    clusters: dict[str, ClusterInput] = {}
    cluster_specs: dict[str, PDClusterSpec] = {}
    for raw in objects.clusters:
        name = str((raw.get("metadata") or {}).get("name"))
        if (raw.get("metadata") or {}).get("deletionTimestamp"):
            continue  # being deleted: its share is freed now
        spec = _parse(PDClusterSpec, raw.get("spec"))
        if spec is not None:
            cluster_specs[name] = spec
        clusters[name] = ClusterInput(spec, _workload(spec, raw.get("status")))
    return Listing(Namespace(pools, clusters), specs, statuses, generations, cluster_specs)


def reread_pools(local: Cluster, namespace: str, listing: Listing, names: Iterable[str]) -> Listing:
    """The listing with the pools ``names`` read again from the API server, for the pass that
    sizes them: a pool deleted since is not found (never sized), the others as stored now."""
    pools = dict(listing.ns.pools)
    specs, statuses = dict(listing.pool_specs), dict(listing.pool_status)
    generations = dict(listing.pool_generation)
    for name in names:
        specs.pop(name, None)
        raw = local.get_custom(PrefillPool.resource.plural, namespace, name)
        if raw is None:
            pools.pop(name, None)
            continue
        spec, status = _read_pool(raw, name, specs, statuses, generations)
        seen = pools.get(name)
        replicas = seen.replicas if seen is not None else None
        pools[name] = PoolInput(spec, status.replicas if replicas is None else replicas,
                                _degraded(status))  # fmt: skip
    ns = Namespace(pools, listing.ns.clusters)
    return Listing(ns, specs, statuses, generations, listing.cluster_specs)


def _read_pool(
    raw: Mapping[str, Any],
    name: str,
    specs: dict[str, PrefillPoolSpec],
    statuses: dict[str, PrefillPoolStatus],
    generations: dict[str, int | None],
) -> tuple[PrefillPoolSpec | None, PrefillPoolStatus]:
    """One PrefillPool as stored: its generation, status and (valid) spec into the listing's
    maps; the spec (None if invalid) and status."""
    generations[name] = (raw.get("metadata") or {}).get("generation")
    status = _parse(PrefillPoolStatus, raw.get("status")) or PrefillPoolStatus()
    statuses[name] = status
    spec = _parse(PrefillPoolSpec, raw.get("spec"))
    if spec is not None:
        specs[name] = spec
    return spec, status


def _parse(model: Any, raw: Any) -> Any:
    try:
        return model.model_validate(raw or {})
    except ValidationError:
        return None


def _degraded(status: PrefillPoolStatus) -> str | None:
    if status.phase != "Degraded":
        return None
    ready = next((c for c in status.conditions if c.type == "Ready"), None)
    return ready.message if ready is not None and ready.message else "its /scale does not answer"


def _workload(spec: PDClusterSpec | None, raw_status: Any) -> Workload | None:
    """The demand every planner uses for this cluster: declared, else the last good one it
    published (``status.workload``)."""
    if spec is not None and spec.workload.declared is not None:
        return spec.workload.declared
    status: PDClusterStatus | None = _parse(PDClusterStatus, raw_status)
    return status.workload if status is not None else None


def with_unseen_sizes(
    members: Members, trust: Trust, listing: Listing, namespace: str, comp: Component
) -> Namespace:
    """The namespace with the size of each pool no writer has published yet, read now (read
    only: a new fleet's members plan with its pools from their first pass)."""
    pools = dict(listing.ns.pools)
    for name in comp.pools:
        found, spec = pools.get(name), listing.pool_specs.get(name)
        if found is None or spec is None or found.replicas is not None or found.degraded:
            continue
        if trust.target_refusal(namespace, spec.scale_target_ref.namespace) is not None:
            continue
        seen, _ = _read_scale(members, spec.placement, spec.scale_target_ref, namespace)
        if seen.known:
            pools[name] = PoolInput(spec, seen.replicas)
    return Namespace(pools, listing.ns.clusters)


@dataclass
class PoolPass:
    """What one pool's pass did, for the handler to write and report."""

    name: str
    status: PrefillPoolStatus
    events: list[Event]
    direction: str | None  # "up" or "down" when its /scale was written


def size_pools(
    members: Members,
    trust: Trust,
    listing: Listing,
    namespace: str,
    comp: Component,
    plan_with: Callable[[Namespace], FleetOutcome],
    now: datetime,
    dry_run: bool,
) -> list[PoolPass]:
    """The lead's pass over its fleet's pools: read each /scale, plan with what was read, scale
    within the rules. ``plan_with``: the component's plan for a namespace view."""
    seen: dict[str, GroupObservation] = {}
    handles: dict[str, Any] = {}
    pools = dict(listing.ns.pools)
    for name in comp.pools:
        spec = listing.pool_specs.get(name)
        if spec is None:
            continue
        refusal = trust.target_refusal(namespace, spec.scale_target_ref.namespace)
        if refusal is not None:
            seen[name] = GroupObservation(None, refusal, reason="TargetForbidden")
            handles[name] = None
        else:
            seen[name], handles[name] = _read_scale(
                members, spec.placement, spec.scale_target_ref, namespace
            )
        o = seen[name]
        degraded = None if o.known else (o.error or "its /scale does not answer")
        pools[name] = PoolInput(spec, o.replicas if o.known else None, degraded)
    fleet = plan_with(Namespace(pools, listing.ns.clusters))
    out = []
    for name, o in seen.items():
        users = {u: listing.cluster_specs[u] for u in listing.ns.users(name)
                 if u in listing.cluster_specs}  # fmt: skip
        unknown = [u for u in listing.ns.users(name) if listing.ns.clusters[u].workload is None]
        decision = decide_pool(
            name,
            listing.pool_specs[name],
            listing.pool_status.get(name) or PrefillPoolStatus(),
            listing.pool_generation.get(name),
            o,
            fleet,
            users,
            now,
            dry_run=dry_run,
            unknown=unknown,
        )
        change, failed = decision.to_apply, None
        if change is not None:
            try:
                handles[name].set_replicas(change.next)
            except (UnreachableError, TargetError) as exc:
                failed = str(exc)
        status = decision.outcome(now, failed)
        direction = None
        if change is not None and failed is None:
            direction = "up" if change.next > change.current else "down"
        out.append(PoolPass(name, status, decision.events, direction))
    return out


def pool_status_patch(status: PrefillPoolStatus) -> Mapping[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")
