"""kopf handlers: thin. Parse, call the reconciler in a thread, write status and events.

One daemon per PDCluster runs the slow loop every ``policy.intervalSeconds`` and at once when
the spec changes (its ``metadata.generation`` moves). State lives in ``status`` only, so a
restarted operator picks up where it stopped (cooldowns included). A pass reads its namespace's
PrefillPools and PDClusters (its fleet) from two kopf indices the watches keep, not from the
API server: kopf fills them before any daemon starts.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import kopf

from prfaas.api import PDCluster, PrefillPool
from prfaas.api.common import Placement
from prfaas.api.pdcluster import RoutingPolicyStatus
from prfaas.controller import metrics
from prfaas.controller.fleet import Objects, pool_status_patch
from prfaas.controller.kube import Cluster, Members, UnreachableError, local_api
from prfaas.controller.reconcile import (
    Reconciler,
    Resource,
    merge_patch,
    parse_status,
    routing_configmap,
)
from prfaas.controller.signals import prometheus_query_factory
from prfaas.controller.trust import Trust
from prfaas.slowloop.conditions import is_true, set_condition
from prfaas.slowloop.decide import Outcome, endpoints_message, with_pools_engines

log = logging.getLogger("prfaas.operator")
PDC, POOL = PDCluster.resource, PrefillPool.resource
FINALIZER = f"{PDC.group}/finalizer"
TICK_S = 1.0  # between passes: a spec change or a pool's new engines are seen within this


class Runtime:
    """Process-wide state, set up by ``configure`` (kept off kopf's memo for typing)."""

    reconciler: Reconciler | None = None
    dry_run = False
    trust = Trust()
    peering_lifetime = 15
    workers = 16  # passes at once (threads), and connections to the local API server
    local: Cluster | None = None


def policy_configmap_name(name: str) -> str:
    return f"{name}-routing-policy"


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PDC.group)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PDC.group, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # events are posted explicitly, one per change
    # with --peering: a dead leader's record expires after this long, then another replica acts
    settings.peering.lifetime = Runtime.peering_lifetime
    settings.watching.server_timeout = 300
    # kopf retries its own failed requests 9 times over ~90 s; a namespace-scoped operator may not
    # list namespaces (least privilege) and kopf only falls back after the last retry: keep the
    # start quick (our passes retry on their own schedule anyway)
    settings.networking.error_backoffs = [1, 2, 4]
    settings.networking.request_timeout = 30
    # the passes' threads: asyncio's default (cores + 4) left 1000 PDClusters waiting in line
    # on API-server round trips, not on CPU
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(Runtime.workers, thread_name_prefix="pass")
    )
    local = Cluster(await asyncio.to_thread(local_api, Runtime.workers))
    Runtime.local = local
    trust = Runtime.trust
    Runtime.reconciler = Reconciler(
        Members(local, allow_exec=trust.allow_kubeconfig_exec),
        prometheus_query_factory(),
        lambda: datetime.now(UTC),
        Runtime.dry_run,
        trust,
    )


def _interval(spec: Any) -> float:
    try:
        return float(spec.get("policy", {}).get("intervalSeconds", 60))
    except (TypeError, ValueError):
        return 60.0


@kopf.index(POOL.group, POOL.version, POOL.plural)
async def pools_by_namespace(*, namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    """What a pass reads of a PrefillPool (kopf drops an object's entry when it is deleted)."""
    meta = {"name": body.meta.get("name"), "generation": body.meta.get("generation")}
    return {namespace: {"metadata": meta, "spec": copy.deepcopy(body.get("spec")),
                        "status": copy.deepcopy(body.get("status"))}}  # fmt: skip


@kopf.index(PDC.group, PDC.version, PDC.plural)
async def pdclusters_by_namespace(*, namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    """What a pass reads of a PDCluster: its spec and the demand it published."""
    meta = {"name": body.meta.get("name"),
            "deletionTimestamp": body.meta.get("deletionTimestamp")}  # fmt: skip
    workload = (body.get("status") or {}).get("workload")
    status = {"workload": copy.deepcopy(workload)} if workload is not None else None
    return {namespace: {"metadata": meta, "spec": copy.deepcopy(body.get("spec")),
                        "status": status}}  # fmt: skip


def _objects(indices: Mapping[str, Any], ns: str) -> Objects:
    """The namespace's objects from the indices (kopf passes each as a keyword argument named
    after its function), a snapshot: read in the event loop, which alone writes them."""
    pools: kopf.Index[Any, Any] = indices["pools_by_namespace"]
    clusters: kopf.Index[Any, Any] = indices["pdclusters_by_namespace"]
    return Objects(tuple(pools.get(ns, ())), tuple(clusters.get(ns, ())))


@kopf.daemon(PDC.group, PDC.version, PDC.plural, cancellation_timeout=10.0)
async def pdcluster_loop(
    *,
    name: str,
    namespace: str | None,
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    **indices: Any,
) -> None:
    assert namespace is not None  # PDCluster is namespaced
    labels = {"namespace": namespace, "pdcluster": name}
    written = _Written()
    try:
        while not stopped:
            generation = body.meta.get("generation")
            started, began = time.perf_counter(), [time.monotonic()]
            try:
                seen = _objects(indices, namespace)
                await _one_pass(name, namespace, body, labels, written, seen, began)
            except Exception as exc:  # keep the loop alive; the next pass retries
                metrics.ERRORS.labels(**labels).inc()
                log.exception("reconcile of %s/%s failed", namespace, name)
                await _report_error(name, namespace, body, exc)
            metrics.RECONCILE_SECONDS.labels(**labels).observe(time.perf_counter() - started)
            # the interval counts from when the pass's work started (its observation, after
            # any wait for a free worker): a pass every interval whatever its own latency, never
            # two observations closer than that; at least one tick after a pass that overran
            deadline = max(began[-1] + _interval(body.spec), time.monotonic() + TICK_S)
            while not stopped and (left := deadline - time.monotonic()) > 0:
                if body.meta.get("generation") != generation:
                    break  # the spec changed: plan again now
                await _follow_pool_engines(name, namespace, body, labels, written)
                # not kopf's stopped.wait: ~90 µs of CPU a call (a task and a timeout), 9% of
                # a core for 1000 daemons ticking every second; a sleep is ~8 µs, and a stop
                # is seen at the next tick
                await asyncio.sleep(min(TICK_S, left))  # not past the deadline
        metrics.forget(namespace, name)  # deleted (or no longer watched): no stale series
    finally:
        if Runtime.reconciler is not None:
            Runtime.reconciler.pool_endpoints.release((namespace, name))
            for link in body.spec.get("prefillPools") or []:  # a fleet member's, one per pool
                Runtime.reconciler.pool_endpoints.release((namespace, f"{name}/{link.get('name')}"))


class _Written:
    """The routing policy this daemon wrote last: kopf's ``body`` lags behind our own writes
    by a watch event, and a policy read from it must never step back a version."""

    policy: dict[str, Any] | None = None

    def __init__(self) -> None:
        self.engines: dict[str, tuple[object, int]] = {}  # pool → (watch, generation) followed

    def status(self, body: kopf.Body) -> dict[str, Any]:
        status = dict(body.status or {})
        seen = (status.get("routingPolicy") or {}).get("version", -1)
        if self.policy is not None and self.policy.get("version", -1) > seen:
            status["routingPolicy"] = self.policy
        return status


def _pool_watches(name: str, namespace: str, body: kopf.Body) -> dict[str, Any]:
    """The EndpointSlice watch of each pool this PDCluster publishes engines of: per pool in a
    fleet, the first pool's otherwise."""
    reconciler = Runtime.reconciler
    pools = [str(p.get("name")) for p in body.spec.get("prefillPools") or []]
    if reconciler is None or not pools:
        return {}
    found = {p: reconciler.pool_endpoints.view((namespace, f"{name}/{p}")) for p in pools}
    if not any(found.values()):
        found = {pools[0]: reconciler.pool_endpoints.view((namespace, name))}
    return {p: w for p, w in found.items() if w is not None and w.ready is not None}


async def _follow_pool_engines(
    name: str, namespace: str, body: kopf.Body, labels: dict[str, str], written: _Written
) -> None:
    """Between passes: publish the pools' engines as soon as their EndpointSlices change (a
    new policy version with nothing else changed), so routers follow pods within seconds."""
    local = Runtime.local
    watches = _pool_watches(name, namespace, body)
    seen = {p: (w, w.generation) for p, w in watches.items()}
    fresh = {p: w.ready for p, w in watches.items() if written.engines.get(p) != seen[p]}
    if local is None or not fresh:
        return  # nothing new since the last look
    old = parse_status(written.status(body)).routing_policy
    if old is None:
        return
    new = with_pools_engines(old, fresh)
    if new.version == old.version:
        written.engines.update(seen)
        return
    doc = new.model_dump(by_alias=True, exclude_none=True, mode="json")
    try:
        await asyncio.to_thread(
            local.patch_status, PDC.plural, namespace, name, {"routingPolicy": doc}
        )
    except Exception as exc:  # the next tick tries again
        log.warning("routing policy of %s/%s not updated: %s", namespace, name, exc)
        return
    written.policy = doc
    written.engines.update(seen)
    log.info(
        "routing policy of %s/%s v%d: %s", namespace, name, new.version, endpoints_message(new)
    )
    kopf.event(body, type="Normal", reason="RoutingPolicy", message=f"v{new.version}: "
               f"{endpoints_message(new)}")  # fmt: skip
    metrics.POLICY_VERSION.labels(**labels).set(new.version)
    await _publish_member_policy(name, namespace, body, new)


async def _report_error(name: str, namespace: str, body: kopf.Body, exc: Exception) -> None:
    """Say so in the Ready condition; everything else in status (the last plan) is kept."""
    local = Runtime.local
    if local is None:
        return
    conditions = set_condition(
        parse_status(body.status).conditions,
        "Ready",
        "False",
        "ReconcileError",
        f"{type(exc).__name__}: {exc}"[:1000],
        body.meta.get("generation"),
    )
    patch = {"conditions": [c.model_dump(by_alias=True, exclude_none=True) for c in conditions]}
    try:
        await asyncio.to_thread(local.patch_status, PDC.plural, namespace, name, patch)
    except Exception as err:  # the API server itself may be the problem
        log.warning("could not report the error on %s/%s: %s", namespace, name, err)


async def _one_pass(
    name: str,
    namespace: str,
    body: kopf.Body,
    labels: dict[str, str],
    written: _Written,
    seen: Objects,
    began: list[float],
) -> None:
    """One pass; appends to ``began`` when its work started in a worker thread."""
    reconciler, local = Runtime.reconciler, Runtime.local
    assert reconciler is not None and local is not None
    res = Resource.parse(
        name, namespace, body.meta.get("generation"), dict(body.spec), written.status(body)
    )

    def work() -> Outcome:
        began.append(time.monotonic())
        return reconciler.reconcile(res, seen)

    outcome = await asyncio.to_thread(work)
    _record(outcome, labels)  # before the status says so: a reader of both sees the writes
    status = outcome.status.model_dump(by_alias=True, exclude_none=True, mode="json")
    patch = merge_patch(body.status, status)  # what became empty is removed, not kept
    await asyncio.to_thread(local.patch_status, PDC.plural, namespace, name, patch)
    written.policy = status.get("routingPolicy", written.policy)
    if outcome.pool_status is not None and outcome.pool_name:
        pool_status = outcome.pool_status.model_dump(by_alias=True, exclude_none=True, mode="json")
        pool_status.update(plannedBy="PDCluster", users=None, scaledAt=None)  # not a fleet's
        await _write_pool_status(namespace, outcome.pool_name, pool_status)
    for done in outcome.pools:  # the fleet's lead sized the fleet's pools
        if done.direction is not None:
            metrics.SCALE_ACTIONS.labels(**labels, group=f"prefillPool/{done.name}",
                                         direction=done.direction).inc()  # fmt: skip
        await _write_pool_status(namespace, done.name, pool_status_patch(done.status))
        for event in done.events:
            kopf.event(body, type=event.type, reason=f"Pool{event.reason}",
                       message=f"PrefillPool {done.name}: {event.message}")  # fmt: skip
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    await _publish_member_policy(name, namespace, body, outcome.status.routing_policy)


async def _write_pool_status(namespace: str, pool: str, status: Mapping[str, Any]) -> None:
    local = Runtime.local
    assert local is not None
    try:
        await asyncio.to_thread(local.patch_status, POOL.plural, namespace, pool, dict(status))
    except Exception as exc:  # the pool may be gone; its own status is best-effort
        log.warning("PrefillPool %s status not written: %s", pool, exc)


async def _publish_member_policy(
    name: str, namespace: str, body: kopf.Body, policy: RoutingPolicyStatus | None
) -> None:
    """Routers in a member cluster cannot read this CR: give them the policy as a ConfigMap."""
    reconciler = Runtime.reconciler
    placement = body.spec.get("placement") or {}
    if reconciler is None or not placement.get("kubeconfigSecretRef") or policy is None:
        return
    if Runtime.dry_run:
        return
    try:
        member = await asyncio.to_thread(
            reconciler.members.for_placement, Placement.model_validate(placement), namespace
        )
        await asyncio.to_thread(
            member.apply_configmap,
            namespace,
            policy_configmap_name(name),
            routing_configmap(policy.model_dump(by_alias=True, exclude_none=True, mode="json")),
        )
    except (UnreachableError, Exception) as exc:
        log.warning("routing policy ConfigMap for %s/%s not written: %s", namespace, name, exc)


def _record(outcome: Outcome, labels: dict[str, str]) -> None:
    status = outcome.status
    metrics.RECONCILES.labels(**labels, phase=status.phase or "").inc()
    metrics.SIGNALS_STALE.labels(**labels).set(
        1 if is_true(status.conditions, "SignalsStale") else 0
    )
    plan = status.plan
    if plan is not None:
        metrics.PLAN_THRESHOLD.labels(**labels).set(plan.threshold_tokens or 0)
        metrics.PLAN_THROUGHPUT.labels(**labels).set(plan.throughput_rps)
        metrics.PLAN_EGRESS.labels(**labels).set(plan.egress_gbps * 1e9 / 8)
        for group, count in (
            ("prefillPool", plan.n_prfaas),
            ("prefill", plan.n_prefill),
            ("decode", plan.n_decode),
        ):
            metrics.PLAN_INSTANCES.labels(**labels, group=group).set(count)
    if status.routing_policy is not None:
        metrics.POLICY_VERSION.labels(**labels).set(status.routing_policy.version)
    for change in outcome.applied:
        direction = "up" if change.next > change.current else "down"
        metrics.SCALE_ACTIONS.labels(**labels, group=change.group, direction=direction).inc()


@kopf.on.delete(
    PDC.group, PDC.version, PDC.plural, retries=3, backoff=5.0, errors=kopf.ErrorsMode.IGNORED
)
async def pdcluster_deleted(*, name: str, namespace: str | None, spec: kopf.Spec, **_: Any) -> None:
    """Delete what the operator created in a member cluster (the policy ConfigMap), only that."""
    reconciler = Runtime.reconciler
    assert namespace is not None
    metrics.forget(namespace, name)
    placement = spec.get("placement") or {}
    if reconciler is None or not placement.get("kubeconfigSecretRef"):
        return
    member = await asyncio.to_thread(
        reconciler.members.for_placement, Placement.model_validate(placement), namespace
    )
    await asyncio.to_thread(member.delete_configmap, namespace, policy_configmap_name(name))
