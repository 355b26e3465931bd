"""The fleet of a namespace as each of its planners sees it (pure).

A PrefillPool that several PDClusters list, or a PDCluster that lists several pools, makes a
*fleet*: the connected set of PDClusters and the pools they list. It is planned once, jointly
(``prfaas.model.fleet_planner.plan_joint``), from inputs every reconcile reads alike (specs,
each pool's size as its writer last saw it, each cluster's last good workload as published in
its status), so the PDCluster passes and the pool's own pass compute the same plan: each
PDCluster applies its own groups and threshold from it, each pool's reconcile its size (one
writer per pool). The plan is memoised on its inputs: every member of a fleet needs it.

A connected set of one PDCluster and at most one pool is not a fleet: that cluster plans alone
and sizes its pool as before.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from prfaas.api.fleet import fleet_from_specs
from prfaas.api.pdcluster import PDClusterSpec
from prfaas.api.prefillpool import PrefillPoolSpec
from prfaas.model.fleet import Fleet
from prfaas.model.fleet_planner import ClusterPlan, FleetPlan, PoolPlan, plan_joint
from prfaas.model.planner import PlanError
from prfaas.model.scenario import ScenarioError
from prfaas.model.workload import Workload


@dataclass(frozen=True)
class PoolInput:
    spec: PrefillPoolSpec | None  # None: its spec is invalid
    replicas: int | None  # as its writer last saw it (None: never seen)
    degraded: str | None = None  # why it cannot be used now (its /scale does not answer)


@dataclass(frozen=True)
class ClusterInput:
    spec: PDClusterSpec | None  # None: its spec is invalid
    workload: Workload | None  # the last good one (declared, or published in its status)


@dataclass(frozen=True)
class Namespace:
    pools: Mapping[str, PoolInput]
    clusters: Mapping[str, ClusterInput]

    def listed(self, cluster: str) -> list[str]:
        spec = self.clusters[cluster].spec
        return [link.name for link in spec.prefill_pools] if spec is not None else []

    def users(self, pool: str) -> list[str]:
        return sorted(c for c in self.clusters if pool in self.listed(c))


def with_workload(ns: Namespace, cluster: str, workload: Workload) -> Namespace:
    """``ns`` with ``cluster``'s demand as just measured (what its pass publishes)."""
    found = ns.clusters[cluster]
    if found.spec is not None and found.spec.workload.declared is not None:
        return ns  # declared: every planner reads the same spec
    clusters = {**ns.clusters, cluster: ClusterInput(found.spec, workload)}
    return Namespace(ns.pools, clusters)


@dataclass(frozen=True)
class Component:
    """A connected set of PDClusters and the pools they list (sorted names)."""

    clusters: tuple[str, ...]
    pools: tuple[str, ...]

    @property
    def is_fleet(self) -> bool:
        return len(self.clusters) > 1 or len(self.pools) > 1


def component(ns: Namespace, *, cluster: str | None = None, pool: str | None = None) -> Component:
    """The connected set around ``cluster`` or ``pool``."""
    clusters: set[str] = set()
    pools: set[str] = {pool} if pool is not None else set()
    todo = [cluster] if cluster is not None else ns.users(pool) if pool is not None else []
    while todo:
        c = todo.pop()
        if c in clusters:
            continue
        clusters.add(c)
        for p in ns.listed(c):
            if p not in pools:
                pools.add(p)
                todo += ns.users(p)
    return Component(tuple(sorted(clusters)), tuple(sorted(pools)))


@dataclass(frozen=True)
class FleetOutcome:
    """The joint plan of a component, or why there is none; what it was planned without."""

    plan: FleetPlan | None
    error: str | None = None
    without: dict[str, str] = field(default_factory=dict)  # pool or cluster → why left out

    def cluster(self, name: str) -> ClusterPlan | None:
        if self.plan is None:
            return None
        return next((c for c in self.plan.clusters if c.name == name), None)

    def pool(self, name: str) -> PoolPlan | None:
        if self.plan is None:
            return None
        return next((p for p in self.plan.pools if p.name == name), None)


def plan_component(ns: Namespace, comp: Component) -> FleetOutcome:
    """Plan ``comp`` without the pools that cannot be used now (invalid, missing, never seen,
    degraded) and the clusters that cannot be planned yet (invalid, no workload, no demand)."""
    without: dict[str, str] = {}
    pools: dict[str, PrefillPoolSpec] = {}
    sizes: dict[str, int] = {}
    for name in comp.pools:
        found = ns.pools.get(name)
        why = _pool_unusable(found)
        if why is not None or found is None or found.spec is None or found.replicas is None:
            without[name] = why or "not usable"
            continue
        pools[name], sizes[name] = found.spec, found.replicas
    clusters: dict[str, PDClusterSpec] = {}
    workloads: dict[str, Workload] = {}
    for name in comp.clusters:
        c = ns.clusters[name]
        if c.spec is None:
            without[name] = "its spec is invalid"
        elif c.workload is None or not c.workload.arrival_rate_rps:
            without[name] = "no workload with traffic yet"
        else:
            links = [link for link in c.spec.prefill_pools if link.name in pools]
            clusters[name] = c.spec.model_copy(update={"prefill_pools": links})
            workloads[name] = c.workload
    if not clusters or not pools:
        return FleetOutcome(None, "nothing to plan: no usable pool or no cluster with traffic",
                            without)  # fmt: skip
    try:
        fleet = fleet_from_specs(pools, clusters, pool_replicas=sizes, workloads=workloads)
        return FleetOutcome(_plan(fleet), None, without)
    except (PlanError, ScenarioError) as exc:
        return FleetOutcome(None, str(exc), without)


def _pool_unusable(found: PoolInput | None) -> str | None:
    if found is None:
        return "not found"
    if found.spec is None:
        return "its spec is invalid"
    if found.degraded:
        return f"degraded: {found.degraded}"
    if found.replicas is None:
        return "its size has not been seen yet"
    return None


class _Plans:
    """The joint plans of the last fleets planned, by the SHA-256 of the fleet's canonical JSON
    (a fleet of 1000 clusters is megabytes of JSON: keep digests, not keys)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.plans: OrderedDict[str, FleetPlan] = OrderedDict()
        self.lock = threading.Lock()
        self.hits = self.misses = 0

    def __call__(self, fleet: Fleet) -> FleetPlan:
        key = hashlib.sha256(fleet.model_dump_json().encode()).hexdigest()
        with self.lock:
            found = self.plans.get(key)
            if found is not None:
                self.plans.move_to_end(key)
                self.hits += 1
                return found
        plan = plan_joint(fleet)  # outside the lock: passes of other fleets go on meanwhile
        with self.lock:
            self.misses += 1
            self.plans[key] = plan
            while len(self.plans) > self.size:
                self.plans.popitem(last=False)
        return plan


_plan = _Plans()
"""Memoised: the same inputs, the same plan, planned once for every member of a fleet."""
