"""The operator's observe step: read the pool, each group's ``/scale`` and the signals.

Returns plain data for ``prfaas.slowloop.decide`` plus, per group, the handle to act on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from pydantic import ValidationError

from prfaas.api.common import Placement, ScaleTargetRef
from prfaas.api.pdcluster import PDClusterSpec
from prfaas.api.prefillpool import PrefillPool, PrefillPoolSpec, PrefillPoolStatus
from prfaas.controller.endpoints import PoolEndpoints
from prfaas.controller.kube import (
    Cluster,
    KubeconfigRejectedError,
    Members,
    TargetError,
    UnreachableError,
)
from prfaas.controller.signals import Query, SignalsUnavailableError, gather
from prfaas.controller.trust import Trust
from prfaas.slowloop.observation import (
    DECODE,
    POOL,
    PREFILL,
    GroupName,
    GroupObservation,
    Observation,
    PoolObservation,
    Signals,
    SignalsUnavailable,
)

log = logging.getLogger("prfaas.operator")


@dataclass(frozen=True)
class ScaleHandle:
    """Where a group's ``/scale`` lives, to write it (``cluster`` None: not reachable)."""

    cluster: Cluster | None
    ref: ScaleTargetRef
    namespace: str

    def set_replicas(self, replicas: int) -> None:
        if self.cluster is None:
            raise UnreachableError("not reachable")
        self.cluster.set_replicas(self.ref, self.namespace, replicas)


def observe(
    members: Members,
    query_factory: Callable[[str], Query],
    trust: Trust,
    name: str,
    namespace: str,
    spec: PDClusterSpec,
    pool_endpoints: PoolEndpoints | None = None,
) -> tuple[Observation, dict[GroupName, ScaleHandle]]:
    pool = _pool(members, namespace, spec)
    if pool_endpoints is not None:
        pool = _with_engines(pool_endpoints, members, trust, (namespace, name), namespace, pool)
    wanted: list[tuple[GroupName, Placement, ScaleTargetRef]] = [
        (PREFILL, spec.placement, spec.prefill.scale_target_ref),
        (DECODE, spec.placement, spec.decode.scale_target_ref),
    ]
    if pool is not None and pool.spec is not None:
        wanted.append((POOL, pool.spec.placement, pool.spec.scale_target_ref))
    groups: dict[GroupName, GroupObservation] = {}
    handles: dict[GroupName, ScaleHandle] = {}
    for group, placement, ref in wanted:
        refusal = trust.target_refusal(namespace, ref.namespace)
        if refusal is not None:  # never read, never written
            groups[group] = GroupObservation(None, refusal, reason="TargetForbidden")
            handles[group] = ScaleHandle(None, ref, namespace)
            continue
        groups[group], handles[group] = _read_scale(members, placement, ref, namespace)
    signals = _signals(spec, query_factory, trust, f"{namespace}/{name}")
    obs = Observation(name, spec, groups, signals, pool, namespace=namespace)
    return obs, handles


def _with_engines(
    found: PoolEndpoints,
    members: Members,
    trust: Trust,
    user: tuple[str, str],
    namespace: str,
    pool: PoolObservation | None,
) -> PoolObservation | None:
    """The pool with its ready engines, when it declares them by Service or selector: listed
    in its own cluster, in its scale target's namespace (None when that cluster cannot be
    reached, so the last ones hold; none from a namespace the CR may not name)."""
    spec = pool.spec if pool is not None else None
    if pool is None or spec is None or not spec.endpoints.discovers:
        found.release(user)
        return pool
    where = spec.scale_target_ref.namespace or namespace
    if trust.target_refusal(namespace, where) is not None:
        found.release(user)
        return replace(pool, endpoints=())
    try:
        cluster = members.for_placement(spec.placement, namespace)
    except UnreachableError:
        return pool
    return replace(pool, endpoints=found.ready(user, cluster, where, spec.endpoints))


def _pool(members: Members, namespace: str, spec: PDClusterSpec) -> PoolObservation | None:
    """The first PrefillPool the cluster lists (one pool per PD cluster in v1alpha1)."""
    if not spec.prefill_pools:
        return None
    link = spec.prefill_pools[0]
    raw = members.local.get_custom(PrefillPool.resource.plural, namespace, link.name)
    if raw is None:
        return PoolObservation(
            link, None, ("PrefillPoolNotFound", f"PrefillPool {link.name} not found")
        )
    generation = (raw.get("metadata") or {}).get("generation")
    try:
        status = PrefillPoolStatus.model_validate(raw.get("status") or {})
    except ValidationError:  # written by an older version: start afresh
        status = PrefillPoolStatus()
    try:
        pool = PrefillPoolSpec.model_validate(raw.get("spec") or {})
        return PoolObservation(link, pool, generation=generation, status=status)
    except ValidationError:
        return PoolObservation(
            link, None, ("PrefillPoolInvalid", f"PrefillPool {link.name} has an invalid spec")
        )


def _read_scale(
    members: Members, placement: Placement, ref: ScaleTargetRef, namespace: str
) -> tuple[GroupObservation, ScaleHandle]:
    try:
        cluster = members.for_placement(placement, namespace)
    except KubeconfigRejectedError as exc:
        refused = GroupObservation(None, str(exc), reachable=False, reason="KubeconfigRejected")
        return refused, ScaleHandle(None, ref, namespace)
    except UnreachableError as exc:
        return GroupObservation(None, str(exc), reachable=False), ScaleHandle(None, ref, namespace)
    handle = ScaleHandle(cluster, ref, namespace)
    try:
        replicas, selector = cluster.get_scale(ref, namespace)
    except UnreachableError as exc:
        return GroupObservation(None, str(exc), reachable=False), ScaleHandle(None, ref, namespace)
    except TargetError as exc:
        return GroupObservation(None, str(exc)), handle
    pending = _unschedulable(cluster, ref.namespace or namespace, selector)
    return GroupObservation(replicas, unschedulable=pending), handle


def _unschedulable(cluster: Cluster, namespace: str, selector: str | None) -> tuple[str, ...]:
    """The target's pods the scheduler left Pending; none when they cannot be listed (no
    selector, no RBAC to list pods, an error): this only reports, it decides nothing."""
    if not selector:
        return ()
    try:
        return tuple(cluster.unschedulable_pods(namespace, selector))
    except Exception as exc:  # a report, never a reason to fail the pass
        if (namespace, selector) not in _WARNED:  # once: it repeats every pass otherwise
            _WARNED.add((namespace, selector))
            log.warning("cannot list the pods of %s in %s (Pending pods go unreported): %s",
                        selector, namespace, exc)  # fmt: skip
        return ()


_WARNED: set[tuple[str, str]] = set()


def _signals(
    spec: PDClusterSpec, query_factory: Callable[[str], Query], trust: Trust, pdcluster: str
) -> Signals | SignalsUnavailable:
    source = spec.workload.prometheus
    refusal = trust.prometheus_refusal(source.url) if source is not None else None
    if refusal is not None:  # never queried
        return SignalsUnavailable("PrometheusNotAllowed", refusal)
    try:
        return gather(spec.workload, query_factory, pdcluster)
    except SignalsUnavailableError as exc:
        return SignalsUnavailable(exc.reason, str(exc))
