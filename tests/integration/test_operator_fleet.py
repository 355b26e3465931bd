"""Fleets on a real kube-apiserver: PDClusters that share a PrefillPool, and a PDCluster with
several pools, planned jointly by the operator (running as its ServiceAccount under RBAC).

Writes to ``/scale`` are counted from the Deployments themselves: every write that changes
``spec.replicas`` moves ``metadata.generation``, whoever made it.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from kube_helpers import (
    ROOT,
    OperatorProcess,
    condition,
    deployment,
    get_json,
    kubectl,
    replicas,
    wait_for,
)
from router_exporter import RouterMetricsExporter, case_study_lengths

from prfaas.api import PDCluster, PrefillPool
from prfaas_dev.ports import free_port
from prfaas_dev.prometheus import LocalPrometheus

pytestmark = pytest.mark.integration
PDC, POOL = PDCluster.resource, PrefillPool.resource
NS = "fleet-shared"
SHARED, NORTH = "h200-pool", "h200-north"


def sample(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "manifests/samples" / name).read_text())
    return doc


def apply(kubeconfig: Path, *docs: dict[str, Any]) -> None:
    kubectl(kubeconfig, "apply", "--server-side", "--field-manager=tests", "-f", "-",
            stdin=yaml.safe_dump_all(docs))  # fmt: skip


def pool(name: str, hi: int, ns: str = NS) -> dict[str, Any]:
    doc = copy.deepcopy(sample("prefillpool-h200.yaml"))
    doc["metadata"] = {"name": name, "namespace": ns}
    doc["spec"]["replicas"] = {"min": 1, "max": hi}
    doc["spec"]["scaleTargetRef"]["name"] = name
    doc["spec"]["endpoints"] = {"urls": [f"http://{name}.example:8000"]}
    return doc


def cluster(name: str, rate: float, pools: dict[str, float], ns: str = NS) -> dict[str, Any]:
    """The case study's PD cluster as ``name``, at ``rate`` req/s, with a link per pool."""
    doc = copy.deepcopy(sample("pdcluster-h20.yaml"))
    doc["metadata"] = {"name": name, "namespace": ns}
    spec = doc["spec"]
    for stage in ("prefill", "decode"):
        spec[stage]["scaleTargetRef"]["name"] = f"{name}-{stage}"
        spec[stage]["endpoints"] = {"urls": [f"http://{name}-{stage}.example:8000"]}
    spec["prefillPools"] = [
        {"name": p, "link": {"capacityGbps": gbps, "usableFraction": 1.0, "rttMs": 20}}
        for p, gbps in pools.items()
    ]
    spec["workload"]["declared"]["arrivalRateRps"] = rate
    spec["policy"].update(
        {"intervalSeconds": 2, "cooldownSeconds": 0, "maxStep": 2, "planPoolSize": True}
    )
    return doc


@pytest.fixture(scope="module")
def admin(control_plane: Any) -> Path:
    kc = Path(control_plane.kubeconfig)
    kubectl(kc, "apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl(kc, "wait", "--for=condition=Established", "--timeout=60s", f"crd/{PDC.name}",
            f"crd/{POOL.name}")  # fmt: skip
    kubectl(kc, "apply", "-f", str(ROOT / "manifests/operator"))
    return kc


@pytest.fixture(scope="module")
def prometheus_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def operator(
    control_plane: Any,
    admin: Path,
    tmp_path_factory: pytest.TempPathFactory,
    prometheus_port: int,
) -> Iterator[OperatorProcess]:
    kc = Path(control_plane.kubeconfig_for_serviceaccount("prfaas-system", "prfaas-operator"))
    log = tmp_path_factory.mktemp("op-fleet") / "operator.log"
    proc = OperatorProcess(kc, log, "--allow-prometheus", f"http://127.0.0.1:{prometheus_port}")
    proc.start()
    yield proc
    proc.stop()


def generation(admin: Path, name: str, ns: str = NS) -> int:
    return int(get_json(admin, "deployment", name, "-n", ns)["metadata"]["generation"])


def status(admin: Path, kind: str, name: str, ns: str = NS) -> dict[str, Any]:
    found: dict[str, Any] = get_json(admin, kind, name, "-n", ns).get("status") or {}
    return found


def shares(admin: Path, name: str, ns: str = NS) -> dict[str, float]:
    return {s["pool"]: s["instances"] for s in status(admin, PDC.singular, name, ns).get(
        "poolShares") or []}  # fmt: skip


def users(admin: Path, name: str, ns: str = NS) -> dict[str, float]:
    return {u["pdcluster"]: u["instances"] for u in status(admin, POOL.singular, name, ns).get(
        "users") or []}  # fmt: skip


def converged(admin: Path) -> bool:
    """Both clusters at their plan, the shared pool at its desired size, and every share the
    PDClusters publish equal to what the pool's status says (one plan)."""
    for name in ("a", "b"):
        c = condition(get_json(admin, PDC.singular, name, "-n", NS), "PlanApplied")
        if not (c and c["status"] == "True"):
            return False
    st = status(admin, POOL.singular, SHARED)
    if st.get("plannedBy") != "Fleet" or st.get("desiredReplicas") != replicas(admin, NS, SHARED):
        return False
    by_pool = users(admin, SHARED)
    return all(shares(admin, n).get(SHARED, 0.0) == pytest.approx(by_pool.get(n, -1), abs=1e-3)
               for n in ("a", "b"))  # fmt: skip


def test_two_pdclusters_share_one_pool_sized_once(admin: Path, operator: OperatorProcess) -> None:
    start = {SHARED: 2, NORTH: 1, "a-prefill": 5, "a-decode": 3, "b-prefill": 5, "b-decode": 3}
    apply(admin, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
          *[deployment(n, NS, r) for n, r in start.items()])  # fmt: skip
    g0 = generation(admin, SHARED)
    apply(
        admin,
        pool(SHARED, 8),
        pool(NORTH, 2),
        cluster("a", 1.2, {SHARED: 100, NORTH: 25}),  # two pools, each with its link
        cluster("b", 0.8, {SHARED: 100}),
    )
    wait_for("the fleet converges", lambda: converged(admin), timeout=150)
    pool_st = status(admin, POOL.singular, SHARED)
    desired = pool_st["desiredReplicas"]
    assert 1 <= desired <= 8
    # one writer, moving one way: each /scale write a step of at most maxStep (2)
    writes = generation(admin, SHARED) - g0
    assert writes == -(-abs(desired - 2) // 2), (writes, desired)
    # shares sum to what the pool has busy, within what it has
    assert sorted(users(admin, SHARED)) == ["a", "b"]
    assert 0 < sum(users(admin, SHARED).values()) <= desired + 1e-6
    # several pools per PDCluster: each listed pool is a route with its own link
    policy = status(admin, PDC.singular, "a")["routingPolicy"]
    routes = {r["name"]: r for r in policy["prefillPools"]}
    assert set(routes) == {SHARED, NORTH}
    assert (routes[SHARED]["linkBudgetGbps"], routes[NORTH]["linkBudgetGbps"]) == (100.0, 25.0)
    assert set(shares(admin, "a")) <= {SHARED, NORTH} and shares(admin, "a")
    north = status(admin, POOL.singular, NORTH)
    assert north["plannedBy"] == "Fleet" and sorted(users(admin, NORTH)) == ["a"]
    assert status(admin, PDC.singular, "b")["routingPolicy"]["prefillPools"][0]["name"] == SHARED

    # no flapping: several passes, not one more /scale write anywhere
    gens = {n: generation(admin, n) for n in start}
    time.sleep(12)  # ~6 passes of each PDCluster
    assert {n: generation(admin, n) for n in start} == gens
    assert converged(admin)

    # b's traffic triples: its share of the pool grows, the shares still fit in the pool
    before = shares(admin, "b")[SHARED]
    kubectl(admin, "patch", PDC.singular, "b", "-n", NS, "--type=merge", "-p",
            json.dumps({"spec": {"workload": {"declared": {"arrivalRateRps": 2.4}}}}))  # fmt: skip
    wait_for("b's share grows", lambda: shares(admin, "b").get(SHARED, 0) > before + 0.05, 60)
    wait_for("the fleet converges again", lambda: converged(admin), timeout=150)
    assert sum(users(admin, SHARED).values()) <= status(admin, POOL.singular, SHARED)[
        "desiredReplicas"] + 1e-6  # fmt: skip
    assert users(admin, SHARED)["b"] == pytest.approx(shares(admin, "b")[SHARED], abs=1e-3)


def test_a_pool_that_cannot_be_used_is_planned_without(
    admin: Path, operator: OperatorProcess
) -> None:
    """North's scale target goes missing: the pool is Degraded, a is planned (and routes)
    without it and says so; the shared pool carries on."""
    broken = pool(NORTH, 2)
    broken["spec"]["scaleTargetRef"]["name"] = "missing"
    apply(admin, broken)

    def without_north() -> bool:
        policy = status(admin, PDC.singular, "a").get("routingPolicy") or {}
        names = {r["name"] for r in policy.get("prefillPools", [])}
        return NORTH not in names and NORTH not in shares(admin, "a")

    wait_for("a plans without north", without_north, timeout=60)
    assert status(admin, POOL.singular, NORTH)["phase"] == "Degraded"
    degraded = condition(get_json(admin, PDC.singular, "a", "-n", NS), "Degraded")
    assert degraded is not None and degraded["status"] == "True"
    assert NORTH in degraded["message"] and "planned without it" in degraded["message"]
    assert shares(admin, "a").get(SHARED, 0) > 0


def test_deleting_a_pdcluster_frees_its_share(admin: Path, operator: OperatorProcess) -> None:
    kubectl(admin, "delete", PDC.singular, "b", "-n", NS, "--wait=true", "--timeout=60s")
    wait_for("b leaves the pool", lambda: "b" not in users(admin, SHARED), timeout=60)
    assert "a" in users(admin, SHARED)


def test_measured_fleet_each_plans_its_own_traffic_then_holds(
    admin: Path, operator: OperatorProcess, prometheus_port: int
) -> None:
    """Two PDClusters sharing a pool, measured through one Prometheus that scrapes both
    clusters' routers (each labelled for its PDCluster): each plans its own traffic, the pool
    is planned from both; Prometheus goes away: both hold, the pool keeps its size."""
    ns = "fleet-measured"
    start = {SHARED: 2, "c-prefill": 5, "c-decode": 3, "d-prefill": 5, "d-decode": 3}
    apply(admin, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
          *[deployment(n, ns, r) for n, r in start.items()])  # fmt: skip
    rc, rd = RouterMetricsExporter(f"{ns}/c"), RouterMetricsExporter(f"{ns}/d")
    targets = {"router": [f"127.0.0.1:{rc.port}", f"127.0.0.1:{rd.port}"]}
    prom = LocalPrometheus(targets, port=prometheus_port).start()
    try:
        # rate() extrapolates a young series by up to ~1.1 scrape intervals over its age: let
        # both be ~10 s old first, so that each pass measures within ~10% of the same rate
        prom.wait_scraped(scrapes=10)
        rc.drive(case_study_lengths(3000))  # long prompts, 3× d's requests
        rd.drive(np.random.default_rng(5).integers(1_000, 6_000, size=1000))
        docs = []
        for name in ("c", "d"):
            doc = cluster(name, 1.0, {SHARED: 100}, ns)
            doc["spec"]["workload"] = {
                "prometheus": {"url": prom.url, "window": "30m", "minRequests": 300}
            }
            docs.append(doc)
        apply(admin, pool(SHARED, 8, ns), *docs)

        def measured() -> bool:
            both = [status(admin, PDC.singular, n, ns).get("signals") or {} for n in "cd"]
            return all(s.get("source") == "Prometheus" for s in both) and sorted(
                users(admin, SHARED, ns)) == ["c", "d"]  # fmt: skip

        wait_for("both planned from Prometheus, the pool from both", measured, timeout=90)
        sc, sd = (status(admin, PDC.singular, n, ns)["signals"] for n in "cd")
        # each its own traffic: 3:1, not the sum for both
        assert sc["arrivalRateRps"] / sd["arrivalRateRps"] == pytest.approx(3.0, rel=0.25)
        assert sc["meanUncachedTokens"] > 15_000 > 6_000 > sd["meanUncachedTokens"]
        # c's long prompts use the pool; d's short ones are best served at home
        assert users(admin, SHARED, ns)["c"] > 1 and users(admin, SHARED, ns)["d"] < 0.5
        for n in "cd":  # the demand every planner of the fleet uses, published
            st = status(admin, PDC.singular, n, ns)  # one read: both from the same pass
            assert st["workload"]["arrivalRateRps"] == pytest.approx(
                st["signals"]["arrivalRateRps"])  # fmt: skip
        wait_for("the pool at its plan", lambda: status(admin, POOL.singular, SHARED, ns).get(
            "desiredReplicas") == replicas(admin, ns, SHARED), timeout=60)  # fmt: skip
    finally:
        prom.stop()
        rc.close()
        rd.close()

    def stale() -> bool:
        found = [condition(get_json(admin, PDC.singular, n, "-n", ns), "SignalsStale")
                 for n in "cd"]  # fmt: skip
        return all(c is not None and c["status"] == "True" for c in found)

    size, gen = replicas(admin, ns, SHARED), generation(admin, SHARED, ns)
    held = users(admin, SHARED, ns)
    wait_for("both stale", stale, timeout=60)
    time.sleep(6)  # a few more passes while stale
    for n in "cd":
        assert status(admin, PDC.singular, n, ns)["phase"] == "Holding"
    assert (replicas(admin, ns, SHARED), generation(admin, SHARED, ns)) == (size, gen)
    # the pool is still planned from both clusters' last good demand
    assert users(admin, SHARED, ns) == pytest.approx(held)
    planned = condition(get_json(admin, POOL.singular, SHARED, "-n", ns), "Planned")
    assert planned is not None and planned["status"] == "True"


def test_the_pools_writer_does_not_fight_another_writer(
    admin: Path, operator: OperatorProcess
) -> None:
    """An HPA-like writer holds the shared pool at 3 for several passes: the fleet's lead
    leaves it alone and says so, until the pool's spec changes."""
    wait_for("the pool at its plan", lambda: status(admin, POOL.singular, SHARED).get(
        "desiredReplicas") == replicas(admin, NS, SHARED), timeout=60)  # fmt: skip
    assert replicas(admin, NS, SHARED) > 3

    def writes() -> float:
        lines = [line for line in operator.metrics().splitlines()
                 if "scale_actions_total" in line and f"prefillPool/{SHARED}" in line
                 and f'namespace="{NS}"' in line]  # fmt: skip
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    before = writes()
    deadline = time.monotonic() + 12  # ~6 passes
    while time.monotonic() < deadline:
        kubectl(admin, "scale", "deployment", SHARED, "-n", NS, "--replicas=3")
        time.sleep(0.5)
    c = condition(get_json(admin, POOL.singular, SHARED, "-n", NS), "ScaleContested")
    assert c is not None and c["status"] == "True" and "another writer" in c["message"]
    assert writes() == before, "the operator wrote the pool's /scale while another writer held it"
    assert replicas(admin, NS, SHARED) == 3
    # the platform team changes the pool's spec (the other writer is gone): the operator acts
    kubectl(admin, "patch", POOL.singular, SHARED, "-n", NS, "--type=merge",
            "-p", json.dumps({"spec": {"datacenter": "dc-east-2"}}))  # fmt: skip
    wait_for("the pool back toward its plan", lambda: replicas(admin, NS, SHARED) > 3, 60)
    released = condition(get_json(admin, POOL.singular, SHARED, "-n", NS), "ScaleContested")
    assert released is not None and released["status"] == "False"
    assert writes() > before


def test_fleet_members_follow_a_shared_pools_engines_between_passes(
    admin: Path, operator: OperatorProcess
) -> None:
    """A pool declared by Service: its ready engines (EndpointSlices, written here as the
    EndpointSlice controller would) reach both members' routing policies within seconds,
    though they plan once a minute."""
    ns = "fleet-engines"
    start = {SHARED: 4, "e-prefill": 5, "e-decode": 3, "f-prefill": 5, "f-decode": 3}
    apply(admin, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
          *[deployment(n, ns, r) for n, r in start.items()])  # fmt: skip
    shared = pool(SHARED, 8, ns)
    shared["spec"]["endpoints"] = {"service": "h200-engines"}
    docs = [cluster(n, 1.0, {SHARED: 100}, ns) for n in ("e", "f")]
    for doc in docs:
        doc["spec"]["policy"]["intervalSeconds"] = 60
    apply(admin, shared, *docs)

    def routes(name: str) -> list[str] | None:
        policy = status(admin, PDC.singular, name, ns).get("routingPolicy") or {}
        found = [r for r in policy.get("prefillPools", []) if r["name"] == SHARED]
        return found[0]["endpoints"] if found else None

    wait_for("both route to the pool", lambda: all(routes(n) == [] for n in "ef"), timeout=60)
    versions = {n: status(admin, PDC.singular, n, ns)["routingPolicy"]["version"] for n in "ef"}
    engine = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "h200-engines-a", "namespace": ns,
                     "labels": {"kubernetes.io/service-name": "h200-engines"}},
        "addressType": "FQDN",
        "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["h200-a.example"], "conditions": {"ready": True}}],
    }  # fmt: skip
    t0 = time.monotonic()
    kubectl(admin, "apply", "--server-side", "--field-manager=endpointslice-controller", "-f",
            "-", stdin=yaml.safe_dump(engine))  # fmt: skip
    want = ["http://h200-a.example:8000"]
    wait_for("both publish the engine", lambda: all(routes(n) == want for n in "ef"), 30)
    followed_s = time.monotonic() - t0
    assert followed_s < 30  # well inside the 60 s between passes
    for n in "ef":  # one new version each, nothing else changed
        assert status(admin, PDC.singular, n, ns)["routingPolicy"]["version"] == versions[n] + 1


def test_a_fleet_without_a_usable_pool_plans_its_clusters_alone(
    admin: Path, operator: OperatorProcess
) -> None:
    """The fleet's only pool goes unusable (its scale target is gone): each member is planned
    alone, local prefill only, and says why; the pool is held, unplanned."""
    ns = "fleet-engines"
    for n in "ef":
        kubectl(admin, "patch", PDC.singular, n, "-n", ns, "--type=merge",
                "-p", json.dumps({"spec": {"policy": {"intervalSeconds": 2}}}))  # fmt: skip
    broken = pool(SHARED, 8, ns)
    broken["spec"]["endpoints"] = {"service": "h200-engines"}
    broken["spec"]["scaleTargetRef"]["name"] = "missing"
    apply(admin, broken)

    def alone(name: str) -> bool:
        st = status(admin, PDC.singular, name, ns)
        policy = st.get("routingPolicy") or {}
        return not policy.get("prefillPools") and (st.get("plan") or {}).get("nPrfaas") == 0

    wait_for("both planned alone", lambda: all(alone(n) for n in "ef"), timeout=60)
    for n in "ef":
        obj = get_json(admin, PDC.singular, n, "-n", ns)
        degraded = condition(obj, "Degraded")
        assert degraded is not None and degraded["reason"] == "PrefillPoolUnusable"
        assert "local prefill only" in degraded["message"]
        assert "thresholdTokens" not in obj["status"]["routingPolicy"]  # never offload
        assert obj["status"]["poolShares"] == [] or "poolShares" not in obj["status"]
    pool_st = status(admin, POOL.singular, SHARED, ns)
    assert pool_st["phase"] == "Degraded" and sorted(users(admin, SHARED, ns)) == ["e", "f"]
    planned = condition(get_json(admin, POOL.singular, SHARED, "-n", ns), "Planned")
    assert planned is not None and planned["status"] == "False"


def test_a_pool_created_or_deleted_between_passes_is_seen_by_the_next(
    admin: Path, operator: OperatorProcess
) -> None:
    """A pass reads its namespace from the operator's watch (an index), not from a list call:
    a PrefillPool created after the PDCluster joins its plan, and leaves it once deleted."""
    ns = "fleet-index"
    start = {SHARED: 2, NORTH: 1, "g-prefill": 5, "g-decode": 3}
    apply(admin, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
          *[deployment(n, ns, r) for n, r in start.items()])  # fmt: skip
    apply(admin, pool(SHARED, 8, ns), cluster("g", 1.2, {SHARED: 100, NORTH: 25}, ns))

    def routes() -> set[str]:
        policy = status(admin, PDC.singular, "g", ns).get("routingPolicy") or {}
        return {r["name"] for r in policy.get("prefillPools", [])}

    wait_for("g plans with the one pool there is", lambda: routes() == {SHARED}, timeout=90)
    assert NORTH not in shares(admin, "g", ns)
    apply(admin, pool(NORTH, 2, ns))
    wait_for("g plans with the new pool", lambda: routes() == {SHARED, NORTH}, timeout=60)
    assert sorted(users(admin, NORTH, ns)) == ["g"]  # and sizes it, the fleet's one writer
    kubectl(admin, "delete", POOL.singular, NORTH, "-n", ns, "--wait=true", "--timeout=60s")
    wait_for("g plans without the deleted pool", lambda: routes() == {SHARED}, timeout=60)
    assert NORTH not in shares(admin, "g", ns)
