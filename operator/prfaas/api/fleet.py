"""From custom resources to a planner ``Fleet`` (pure: no API calls, no files).

The operator (and ``prfaas plan -f DIR``) builds one fleet from every ``PrefillPool`` and
``PDCluster`` of a namespace and plans it once: each pool is then sized by one writer, from all
the demand on it, and each PD cluster gets its share of every pool it lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from prfaas.api.pdcluster import PDCluster, PDClusterSpec
from prfaas.api.prefillpool import PrefillPool, PrefillPoolSpec
from prfaas.model.fleet import Egress, Fleet, FleetCluster, FleetLink, FleetPlanner, FleetPool
from prfaas.model.scenario import Range, ScenarioError, describe
from prfaas.model.workload import Workload


def fleet_from_specs(
    pools: Mapping[str, PrefillPoolSpec],
    clusters: Mapping[str, PDClusterSpec],
    *,
    pool_replicas: Mapping[str, int] | None = None,
    workloads: Mapping[str, Workload] | None = None,
    planner: FleetPlanner | None = None,
) -> Fleet:
    """The fleet of these pools and PD clusters (one namespace).

    ``pool_replicas``: each pool's current size (default: its ``replicas.max``); a pool is sized
    within its ``replicas`` bounds when a PD cluster that lists it sets ``policy.planPoolSize``.
    ``workloads``: measured workloads by cluster (default: the declared one); each needs
    ``arrivalRateRps``, the cluster's demand.
    """
    if not clusters:
        raise ScenarioError("fleet: no PDCluster")
    models = {c.model.model_dump_json() for c in clusters.values()}
    if len(models) > 1:
        raise ScenarioError(
            "fleet: the PDClusters serve different models; a PrefillPool serves one model"
        )
    sized = {link.name for c in clusters.values() if c.policy.plan_pool_size
             for link in c.prefill_pools}  # fmt: skip
    current = pool_replicas or {}
    data: dict[str, Any] = {
        "model": next(iter(clusters.values())).model,
        "pools": [
            _pool(name, spec, current.get(name, spec.replicas.max), name in sized)
            for name, spec in pools.items()
        ],
        "clusters": [
            _cluster(name, spec, (workloads or {}).get(name)) for name, spec in clusters.items()
        ],
        "planner": planner or FleetPlanner(),
    }
    try:
        return Fleet.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"fleet: {describe(exc)}") from None


def _pool(name: str, spec: PrefillPoolSpec, replicas: int, sized: bool) -> FleetPool:
    bounds = spec.replicas
    return FleetPool(
        name=name,
        datacenter=spec.datacenter,
        instances=bounds.clamp(replicas),
        replicas=Range(min=bounds.min, max=bounds.max) if sized else None,
        instance=spec.instance,
        egress=Egress(
            capacity_gbps=spec.egress.capacity_gbps, usable_fraction=spec.egress.usable_fraction
        )
        if spec.egress
        else None,
    )


def _cluster(name: str, pd: PDClusterSpec, measured: Workload | None) -> FleetCluster:
    workload = measured or pd.workload.declared
    if workload is None:
        raise ScenarioError(
            f"PDCluster {name}: no workload (a Prometheus workload must be measured first)"
        )
    if workload.arrival_rate_rps is None:
        raise ScenarioError(
            f"PDCluster {name}: workload.declared.arrivalRateRps is needed to plan a fleet "
            "(it is the cluster's demand)"
        )
    n = pd.instances
    threshold = pd.policy.threshold
    return FleetCluster(
        name=name,
        datacenter=pd.datacenter,
        instances=n,
        instance=pd.instance,
        min_prefill=max(pd.prefill.replicas.min, n - pd.decode.replicas.max),
        min_decode=max(pd.decode.replicas.min, n - pd.prefill.replicas.max, 1),
        workload=workload,
        links=[FleetLink(pool=p.name, **p.link.model_dump()) for p in pd.prefill_pools],
        threshold_step_tokens=threshold.step_tokens,
        fixed_threshold_tokens=threshold.tokens if threshold.mode == "Fixed" else None,
    )


def fleet_from_documents(docs: Sequence[tuple[str, Any]]) -> Fleet:
    """The fleet of the ``PrefillPool`` and ``PDCluster`` objects among YAML documents
    ``(source, object)``; other kinds are skipped. All must be in one namespace."""
    pools: dict[str, PrefillPoolSpec] = {}
    clusters: dict[str, PDClusterSpec] = {}
    namespaces: set[str] = set()
    for source, obj in docs:
        if not isinstance(obj, dict) or obj.get("kind") not in ("PrefillPool", "PDCluster"):
            continue
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise ScenarioError(f"{source}: {obj['kind']} without metadata.name")
        namespaces.add(str(meta.get("namespace", "default")))
        body = {k: v for k, v in obj.items() if k != "metadata"}
        try:
            if obj["kind"] == "PrefillPool":
                pools[name] = PrefillPool.model_validate(body).spec
            else:
                clusters[name] = PDCluster.model_validate(body).spec
        except ValidationError as exc:
            raise ScenarioError(f"{source}: {obj['kind']} {name}: {describe(exc)}") from None
    if len(namespaces) > 1:
        raise ScenarioError(
            f"fleet: objects in several namespaces ({', '.join(sorted(namespaces))}); "
            "a PDCluster uses PrefillPools of its own namespace"
        )
    if not pools:
        raise ScenarioError("fleet: no PrefillPool among the documents")
    return fleet_from_specs(pools, clusters)
