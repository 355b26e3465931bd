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

from prfaas.api import PDCluster, PrefillPool

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


def pool(name: str, hi: int) -> dict[str, Any]:
    doc = copy.deepcopy(sample("prefillpool-h200.yaml"))
    doc["metadata"] = {"name": name, "namespace": NS}
    doc["spec"]["replicas"] = {"min": 1, "max": hi}
    doc["spec"]["scaleTargetRef"]["name"] = name
    doc["spec"]["endpoints"] = {"urls": [f"http://{name}.example:8000"]}
    return doc


def cluster(name: str, rate: float, pools: dict[str, float]) -> dict[str, Any]:
    """The case study's PD cluster as ``name``, at ``rate`` req/s, with a link per pool."""
    doc = copy.deepcopy(sample("pdcluster-h20.yaml"))
    doc["metadata"] = {"name": name, "namespace": NS}
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
def operator(
    control_plane: Any, admin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    kc = Path(control_plane.kubeconfig_for_serviceaccount("prfaas-system", "prfaas-operator"))
    proc = OperatorProcess(kc, tmp_path_factory.mktemp("op-fleet") / "operator.log")
    proc.start()
    yield proc
    proc.stop()


def generation(admin: Path, name: str) -> int:
    return int(get_json(admin, "deployment", name, "-n", NS)["metadata"]["generation"])


def status(admin: Path, kind: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = get_json(admin, kind, name, "-n", NS).get("status") or {}
    return found


def shares(admin: Path, name: str) -> dict[str, float]:
    return {s["pool"]: s["instances"] for s in status(admin, PDC.singular, name).get(
        "poolShares") or []}  # fmt: skip


def users(admin: Path, name: str) -> dict[str, float]:
    return {u["pdcluster"]: u["instances"] for u in status(admin, POOL.singular, name).get(
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
