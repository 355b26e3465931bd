"""The operator on a real kube-apiserver, running as its ServiceAccount under RBAC.

One control plane (plus a second one as a member cluster in the multi-cluster test); the
operator runs as a child process with the identity the manifests grant, so a missing or
excessive permission shows up here.
"""

from __future__ import annotations

import copy
import http.server
import json
import threading
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
    member_secret,
    replicas,
    wait_for,
)
from router_exporter import RouterMetricsExporter, case_study_lengths

from prfaas.api import PDCluster, PrefillPool
from prfaas_dev.ports import free_port
from prfaas_dev.prometheus import LocalPrometheus

pytestmark = pytest.mark.integration
SA = "system:serviceaccount:prfaas-system:prfaas-operator"
SA_GROUPS = [
    "system:serviceaccounts",
    "system:serviceaccounts:prfaas-system",
    "system:authenticated",
]
NS = "prfaas-demo"
TRUSTED_NS = "platform-targets"  # the operator's --allow-target-namespace
PDC, POOL = PDCluster.resource, PrefillPool.resource


def sample(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "manifests/samples" / name).read_text())
    return doc


def fast(doc: dict[str, Any], **policy: Any) -> dict[str, Any]:
    """A sample with a test-speed loop: plan every 2 s, no cooldown unless asked."""
    out = copy.deepcopy(doc)
    out["spec"]["policy"].update({"intervalSeconds": 2, "cooldownSeconds": 0, **policy})
    return out


def apply(kubeconfig: Path, *docs: dict[str, Any], server_side: bool = True) -> str:
    args = ["apply", "-f", "-"] + (
        ["--server-side", "--field-manager=tests"] if server_side else []
    )
    return kubectl(kubeconfig, *args, stdin=yaml.safe_dump_all(docs)).stdout


@pytest.fixture(scope="module")
def second_control_plane(control_plane_factory: Any) -> Any:
    """Another API server: a member cluster in another datacenter."""
    return control_plane_factory()


@pytest.fixture(scope="module")
def admin(control_plane: Any) -> Path:
    kc = Path(control_plane.kubeconfig)
    kubectl(kc, "apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl(
        kc,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        f"crd/{PDC.name}",
        f"crd/{POOL.name}",
    )
    kubectl(kc, "apply", "-f", str(ROOT / "manifests/operator"))
    apply(kc, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    return kc


@pytest.fixture(scope="module")
def operator_kubeconfig(control_plane: Any, admin: Path) -> Path:
    """A real bound token of the operator's ServiceAccount (TokenRequest API)."""
    return Path(control_plane.kubeconfig_for_serviceaccount("prfaas-system", "prfaas-operator"))


@pytest.fixture(scope="module")
def allowed_prometheus() -> dict[str, int]:
    """Ports of the Prometheus servers the platform lets CRs query (operator flags)."""
    return {"measured": free_port(), "failing": free_port(), "slow": free_port()}


@pytest.fixture(scope="module")
def operator(
    operator_kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
    allowed_prometheus: dict[str, int],
) -> Iterator[OperatorProcess]:
    flags = ["--allow-target-namespace", TRUSTED_NS]
    for port in allowed_prometheus.values():
        flags += ["--allow-prometheus", f"http://127.0.0.1:{port}"]
    log = tmp_path_factory.mktemp("op") / "operator.log"
    proc = OperatorProcess(operator_kubeconfig, log, *flags)
    proc.start()
    yield proc
    proc.stop()


def fresh_namespace(admin: Path, ns: str, pool: int = 4, prefill: int = 5, decode: int = 3) -> None:
    apply(
        admin,
        namespace(ns),
        deployment("h200-prefill", ns, pool),
        deployment("h20-prefill", ns, prefill),
        deployment("h20-decode", ns, decode),
    )


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def in_ns(doc: dict[str, Any], ns: str) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["metadata"]["namespace"] = ns
    return out


def pdcluster(admin: Path, ns: str, name: str = "h20-pd") -> dict[str, Any]:
    return get_json(admin, PDC.singular, name, "-n", ns)


# -- applying the samples, and what the API server refuses ---------------------------------------


def test_samples_apply_server_side_and_idempotently(admin: Path) -> None:
    out = kubectl(
        admin,
        "apply",
        "--server-side",
        "--field-manager=tests",
        "-k",
        str(ROOT / "manifests/samples"),
    ).stdout
    assert f"{PDC.singular}.{PDC.group}/h20-pd serverside-applied" in out
    before = pdcluster(admin, NS)["metadata"]["generation"]
    kubectl(
        admin,
        "apply",
        "--server-side",
        "--field-manager=tests",
        "-k",
        str(ROOT / "manifests/samples"),
    )
    assert pdcluster(admin, NS)["metadata"]["generation"] == before
    # defaults were applied by the API server from the CRD schema
    got = pdcluster(admin, NS)["spec"]
    assert got["policy"]["threshold"]["stepTokens"] == 100
    assert got["instance"]["prefill"]["interpolation"] == "pchip"
    table = get_json(admin, PDC.plural, "-n", NS)
    assert table["items"][0]["kind"] == PDC.kind
    columns = kubectl(admin, "get", PDC.short_names[0], "-n", NS).stdout.splitlines()[0]
    for column in ("THRESHOLD", "NP", "ND", "THROUGHPUT", "PHASE"):
        assert column in columns


def _mutate(path: str, value: Any) -> dict[str, Any]:
    doc = in_ns(sample("pdcluster-h20.yaml"), NS)
    doc["metadata"]["name"] = "invalid"
    target = doc["spec"]
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return doc


DELETE = object()
INVALID = [
    ("policy.mode", "Apply", "spec.policy.mode"),
    ("instances", 1, "spec.instances"),
    ("prefill.replicas", {"min": 5, "max": 2}, "min must not exceed max"),
    ("decode.replicas", {"min": 8, "max": 8}, "must not exceed instances"),
    ("prefill.scaleTargetRef.name", "", "spec.prefill.scaleTargetRef.name"),
    ("policy.threshold", {"mode": "Fixed"}, "threshold.tokens is required"),
    ("policy.threshold", {"mode": "Fixed", "tokens": 500000}, "within the workload"),
    ("workload", {}, "exactly one of prometheus or declared"),
    ("instance.decode", DELETE, "instance.decode is required"),
    (
        "instance.prefill.table",
        [{"tokens": 8192, "seconds": 1.0}, {"tokens": 1024, "seconds": 2.0}],
        "strictly increasing",
    ),
    (
        "model.kvCache.table",
        [{"tokens": 1024, "mib": 300}, {"tokens": 8192, "mib": 100}],
        "must not decrease",
    ),
    ("prefillPools.0.link.capacityGbps", 0, "capacityGbps"),
    ("workload.declared.inputLength.lognormal.min", 200000, "min must be below max"),
    ("prefill.endpoints.urls", ["ftp://x"], "spec.prefill.endpoints.urls"),
]


@pytest.mark.parametrize(("path", "value", "needle"), INVALID, ids=[i[0] for i in INVALID])
def test_invalid_pdclusters_are_rejected_naming_the_field(
    admin: Path, path: str, value: Any, needle: str
) -> None:
    proc = kubectl(
        admin,
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        "-",
        stdin=yaml.safe_dump(_mutate(path, value)),
        check=False,
    )
    assert proc.returncode != 0, f"{path}={value!r} was accepted"
    assert needle in proc.stderr, proc.stderr


# -- the slow loop -------------------------------------------------------------------------------


def test_operator_converges_the_case_study(admin: Path, operator: OperatorProcess) -> None:
    ns = "case-study"
    fresh_namespace(admin, ns)
    apply(
        admin,
        in_ns(sample("prefillpool-h200.yaml"), ns),
        in_ns(fast(sample("pdcluster-h20.yaml")), ns),
    )

    def applied() -> bool:
        obj = pdcluster(admin, ns)
        c = condition(obj, "PlanApplied")
        return bool(c and c["status"] == "True")

    wait_for("PlanApplied", applied, timeout=90)
    obj = pdcluster(admin, ns)
    plan = obj["status"]["plan"]
    assert (plan["nPrfaas"], plan["nPrefill"], plan["nDecode"]) == (4, 3, 5)
    assert plan["thresholdTokens"] == 19400
    assert plan["throughputRps"] == pytest.approx(3.24, rel=0.03)
    assert obj["status"]["routingPolicy"]["thresholdTokens"] == 19400
    policy = obj["status"]["routingPolicy"]
    # the samples name Services: the pool's engines are its ready EndpointSlice endpoints (none
    # here: no pods), the local groups' are left to the router
    assert policy["prefillPools"][0] == {
        "name": "h200-pool",
        "endpoints": [],
        "linkBudgetGbps": 100.0,
        "discovered": True,  # found in EndpointSlices: routers keep them without an allowlist
    }
    assert policy["prefillDiscovery"]["labelSelector"] == "kubernetes.io/service-name=h20-prefill"
    assert "Forbidden" not in operator.log()  # it may list this cluster's EndpointSlices
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert (replicas(admin, ns, "h20-prefill"), replicas(admin, ns, "h20-decode")) == (3, 5)
    assert replicas(admin, ns, "h200-prefill") == 4
    managers = get_json(admin, "deployment", "h20-decode", "-n", ns, "--show-managed-fields")[
        "metadata"
    ]["managedFields"]
    by_operator = [m for m in managers if m["manager"] == "prfaas-operator"]
    assert [m.get("subresource") for m in by_operator] == ["scale"]
    pool = get_json(admin, POOL.singular, "h200-pool", "-n", ns)
    assert pool["status"]["desiredReplicas"] == 4
    assert pool["status"]["observedGeneration"] == pool["metadata"]["generation"]
    ready = condition(pool, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", "Reachable")
    columns = kubectl(admin, "get", PDC.singular, "h20-pd", "-n", ns).stdout.split("\n")[0]
    assert "READY" in columns.split()  # in the default columns, not only with -o wide
    events = get_json(admin, "events", "-n", ns)["items"]
    reasons = {e["reason"] for e in events}
    assert {"Scaled", "Planned", "RoutingPolicy"} <= reasons
    assert "prfaas_plan_threshold_tokens" in operator.metrics()


def test_a_policy_that_stops_offloading_keeps_its_version(
    admin: Path, operator: OperatorProcess
) -> None:
    """The PrefillPool goes away: the policy drops it and its threshold in one new version,
    then stays. (The status was patched without the fields that became empty, so the old
    threshold stayed in status and every pass bumped the version.)"""
    ns = "pool-gone"
    fresh_namespace(admin, ns)
    apply(
        admin,
        in_ns(sample("prefillpool-h200.yaml"), ns),
        in_ns(fast(sample("pdcluster-h20.yaml")), ns),
    )

    def policy() -> dict[str, Any]:
        return dict(pdcluster(admin, ns).get("status", {}).get("routingPolicy") or {})

    wait_for("an offloading policy", lambda: policy().get("thresholdTokens") == 19400, 90)
    kubectl(admin, "delete", POOL.singular, "h200-pool", "-n", ns, "--wait=true")
    wait_for("the pool dropped", lambda: not policy().get("prefillPools"), timeout=60)
    dropped = policy()
    assert "thresholdTokens" not in dropped
    time.sleep(3 * 2 + 1)  # three more passes
    assert policy() == dropped
    c = condition(pdcluster(admin, ns), "Degraded")
    assert c is not None and c["reason"] == "PrefillPoolNotFound"


def test_observe_mode_changes_nothing(admin: Path, operator: OperatorProcess) -> None:
    ns = "observe"
    fresh_namespace(admin, ns)
    apply(
        admin,
        in_ns(sample("prefillpool-h200.yaml"), ns),
        in_ns(fast(sample("pdcluster-h20.yaml"), mode="Observe"), ns),
    )
    wait_for("a plan", lambda: (pdcluster(admin, ns).get("status") or {}).get("plan"), timeout=60)
    obj = pdcluster(admin, ns)
    assert condition(obj, "PlanApplied")["reason"] == "Observe"  # type: ignore[index]
    assert obj["status"]["plan"]["nPrefill"] == 3
    assert (replicas(admin, ns, "h20-prefill"), replicas(admin, ns, "h20-decode")) == (5, 3)


def test_bounds_and_max_step_are_respected(admin: Path, operator: OperatorProcess) -> None:
    ns = "bounded"
    fresh_namespace(admin, ns, prefill=7, decode=1)
    doc = fast(sample("pdcluster-h20.yaml"), maxStep=1, cooldownSeconds=3600)
    doc["spec"]["decode"]["replicas"] = {"min": 1, "max": 4}
    apply(admin, in_ns(sample("prefillpool-h200.yaml"), ns), in_ns(doc, ns))
    wait_for("one step", lambda: replicas(admin, ns, "h20-decode") == 2, timeout=60)

    def cooling() -> bool:
        c = condition(pdcluster(admin, ns), "PlanApplied")
        return bool(c and c["status"] == "False" and "cooldown" in c["message"])

    wait_for("the next pass to hold for the cooldown", cooling, timeout=30)
    obj = pdcluster(admin, ns)
    assert obj["status"]["plan"]["nDecode"] <= 4  # planned within bounds
    assert replicas(admin, ns, "h20-prefill") == 6  # one step of 1, then the cooldown holds
    assert replicas(admin, ns, "h20-decode") == 2


def test_restart_loses_nothing(admin: Path, operator: OperatorProcess) -> None:
    ns = "case-study"
    before = pdcluster(admin, ns)["status"]
    operator.stop()
    operator.start()
    wait_for(
        "a pass after restart",
        lambda: (
            pdcluster(admin, ns)["status"]["signals"]["observedAt"]
            != before["signals"]["observedAt"]
        ),
        timeout=60,
    )
    after = pdcluster(admin, ns)["status"]
    assert after["routingPolicy"]["version"] == before["routingPolicy"]["version"]
    assert after["scaledAt"] == before["scaledAt"]
    assert (replicas(admin, ns, "h20-prefill"), replicas(admin, ns, "h20-decode")) == (3, 5)


def test_spec_change_replans_at_once(admin: Path, operator: OperatorProcess) -> None:
    ns = "case-study"
    kubectl(
        admin,
        "patch",
        PDC.singular,
        "h20-pd",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps(
            {
                "spec": {
                    "policy": {
                        "intervalSeconds": 3600,
                        "threshold": {"mode": "Fixed", "tokens": 30000},
                    }
                }
            }
        ),
    )
    wait_for(
        "fixed threshold",
        lambda: pdcluster(admin, ns)["status"]["plan"]["thresholdTokens"] == 30000,
        timeout=30,
    )
    assert pdcluster(admin, ns)["status"]["routingPolicy"]["thresholdTokens"] == 30000


def test_operator_rbac_is_least_privilege(admin: Path) -> None:
    listing = kubectl(
        admin, "auth", "can-i", "--list", f"--as={SA}", *[f"--as-group={g}" for g in SA_GROUPS]
    ).stdout
    for line in listing.splitlines()[1:]:
        resource = line.split()[0]
        assert resource != "*.*" and not resource.startswith("*"), line
    assert (
        kubectl(
            admin, "auth", "can-i", "get", "secrets", "-A", f"--as={SA}", check=False
        ).stdout.strip()
        == "no"
    )
    assert (
        kubectl(
            admin,
            "auth",
            "can-i",
            "update",
            PDC.name,
            "-n",
            NS,
            f"--as={SA}",
            check=False,
        ).stdout.strip()
        == "no"
    )


# -- signals from a real Prometheus, and what happens when it goes away --------------------------


def test_prometheus_signals_then_stale_holds_the_plan(
    admin: Path, operator: OperatorProcess, allowed_prometheus: dict[str, int]
) -> None:
    ns = "measured"
    fresh_namespace(admin, ns)
    exporter = RouterMetricsExporter()
    port = allowed_prometheus["measured"]
    prom = LocalPrometheus({"router": [f"127.0.0.1:{exporter.port}"]}, port=port).start()
    try:
        prom.wait_scraped()
        exporter.drive(case_study_lengths(3000))
        doc = fast(sample("pdcluster-h20.yaml"))
        # 3000 requests over a 30 min window: ~1.7 req/s, below what the cluster serves, so
        # the capacity floors (traffic at the current threshold) allow the role conversion
        doc["spec"]["workload"] = {
            "prometheus": {"url": prom.url, "window": "30m", "minRequests": 500}
        }
        # a move of t is published once it has lasted 6 s (3 passes; default: the window)
        doc["spec"]["policy"]["threshold"] = {"dwellSeconds": 6}
        apply(admin, in_ns(sample("prefillpool-h200.yaml"), ns), in_ns(doc, ns))

        def planned_from_prometheus() -> bool:
            status = pdcluster(admin, ns).get("status") or {}
            return (status.get("signals") or {}).get("source") == "Prometheus"

        wait_for("a plan from Prometheus", planned_from_prometheus, timeout=60)
        wait_for("convergence", lambda: replicas(admin, ns, "h20-decode") == 5, timeout=60)
        first = pdcluster(admin, ns)["status"]["plan"]
        assert 16_000 <= first["thresholdTokens"] <= 23_000

        # the traffic changes: a flood of short prompts moves the plan
        exporter.drive(np.random.default_rng(3).integers(1_000, 6_000, size=20_000))

        def replanned() -> bool:
            plan = pdcluster(admin, ns)["status"]["plan"]
            return bool(plan["thresholdTokens"] != first["thresholdTokens"])

        wait_for("a new plan for the new traffic", replanned, timeout=60)
        seen = pdcluster(admin, ns)["status"]
        # the move is remembered across passes (status.pendingThreshold), not yet published
        assert seen["routingPolicy"]["version"] == 1, seen
        t_old, pending = seen["routingPolicy"]["thresholdTokens"], seen["pendingThreshold"]
        assert abs(pending["tokens"] - t_old) > 0.05 * t_old

        def published() -> bool:
            return bool(pdcluster(admin, ns)["status"]["routingPolicy"]["version"] > 1)

        wait_for("the move published after its dwell", published, timeout=30)
        before = pdcluster(admin, ns)["status"]
        assert "pendingThreshold" not in before
        assert abs(before["routingPolicy"]["thresholdTokens"] - t_old) > 0.05 * t_old
        held = (replicas(admin, ns, "h20-prefill"), replicas(admin, ns, "h20-decode"))
    finally:
        prom.stop()
        exporter.close()

    def stale() -> bool:
        c = condition(pdcluster(admin, ns), "SignalsStale")
        return bool(c and c["status"] == "True")

    wait_for("SignalsStale", stale, timeout=60)
    obj = pdcluster(admin, ns)
    assert condition(obj, "SignalsStale")["reason"] == "PrometheusUnreachable"  # type: ignore[index]
    assert obj["status"]["phase"] == "Holding"
    assert obj["status"]["plan"] == before["plan"]  # the last good plan is kept
    assert obj["status"]["routingPolicy"] == before["routingPolicy"]
    assert (replicas(admin, ns, "h20-prefill"), replicas(admin, ns, "h20-decode")) == held


# -- a PrefillPool in another datacenter (a second API server) -----------------------------------


def test_pd_cluster_in_a_member_gets_its_policy_and_deletion_cleans_up(
    admin: Path, operator: OperatorProcess, second_control_plane: Any
) -> None:
    ns = "remote-pd"
    member = Path(second_control_plane.kubeconfig)
    apply(
        member,
        namespace(ns),
        deployment("h20-prefill", ns, 5),
        deployment("h20-decode", ns, 3),
    )
    apply(
        admin,
        namespace(ns),
        deployment("h200-prefill", ns, 4),
    )
    member_secret(admin, member, ns)
    pd = in_ns(fast(sample("pdcluster-h20.yaml")), ns)
    pd["spec"]["placement"] = {"kubeconfigSecretRef": {"name": "dc-east"}}
    apply(admin, in_ns(sample("prefillpool-h200.yaml"), ns), pd)

    wait_for("the member split", lambda: replicas(member, ns, "h20-decode") == 5, timeout=90)

    def policy_in_member() -> dict[str, Any] | None:
        cm = kubectl(
            member, "get", "configmap", "h20-pd-routing-policy", "-n", ns, "-o", "json", check=False
        )
        if cm.returncode != 0:
            return None
        return dict(json.loads(json.loads(cm.stdout)["data"]["policy.json"]))

    policy = wait_for("the routing-policy ConfigMap in the member", policy_in_member, timeout=60)
    assert policy["thresholdTokens"] == 19400
    assert policy["version"] >= 1

    kubectl(admin, "delete", PDC.singular, "h20-pd", "-n", ns, "--wait=true", "--timeout=60s")
    wait_for("the ConfigMap gone", lambda: policy_in_member() is None, timeout=30)
    # a deleted CR stops all actions: a manual change is left alone
    kubectl(member, "scale", "deployment", "h20-decode", "-n", ns, "--replicas=2")
    time.sleep(6)  # three of its former intervals
    assert replicas(member, ns, "h20-decode") == 2


def test_member_cluster_pool_and_unreachable_member(
    admin: Path, operator: OperatorProcess, second_control_plane: Any
) -> None:
    ns = "multi"
    member = Path(second_control_plane.kubeconfig)
    apply(
        member,
        namespace(ns),
        deployment("h200-prefill", ns, 2),
    )
    apply(
        admin,
        namespace(ns),
        deployment("h20-prefill", ns, 5),
        deployment("h20-decode", ns, 3),
    )
    member_secret(admin, member, ns)
    pool = in_ns(sample("prefillpool-h200.yaml"), ns)
    pool["spec"]["placement"] = {"kubeconfigSecretRef": {"name": "dc-east"}}
    pool["spec"]["replicas"] = {"min": 1, "max": 4}
    pool["spec"]["endpoints"] = {
        "urls": [f"http://h200-prefill.{ns}.svc:8000"]
    }  # no EndpointSlices here
    pd = in_ns(fast(sample("pdcluster-h20.yaml")), ns)
    pd["spec"]["policy"]["planPoolSize"] = True
    apply(admin, pool, pd)

    wait_for(
        "the member pool scaled to 4", lambda: replicas(member, ns, "h200-prefill") == 4, timeout=90
    )
    wait_for("local split", lambda: replicas(admin, ns, "h20-decode") == 5, timeout=60)

    def pool_in_status() -> bool:  # the status write follows the /scale writes of a pass
        replicas_seen = (pdcluster(admin, ns).get("status") or {}).get("replicas") or {}
        return bool(replicas_seen.get("prefillPool") == 4)

    wait_for("the pass's status", pool_in_status, timeout=30)
    obj = pdcluster(admin, ns)
    assert obj["status"]["replicas"]["prefillPool"] == 4
    assert condition(obj, "Degraded")["status"] == "False"  # type: ignore[index]
    policy_before = obj["status"]["routingPolicy"]
    assert policy_before["prefillPools"][0]["endpoints"]

    second_control_plane.stop()

    def degraded() -> bool:
        c = condition(pdcluster(admin, ns), "Degraded")
        return bool(c and c["status"] == "True")

    wait_for("Degraded", degraded, timeout=90)
    obj = pdcluster(admin, ns)
    degraded_condition = condition(obj, "Degraded")
    assert degraded_condition is not None
    assert degraded_condition["reason"] == "Unreachable"
    assert "prefillPool" in degraded_condition["message"]
    pool_ready = condition(get_json(admin, POOL.singular, "h200-pool", "-n", ns), "Ready")
    assert pool_ready is not None and pool_ready["status"] == "False"
    assert pool_ready["reason"] == "Unreachable"
    assert "keeps the pool as last seen (4 instances)" in degraded_condition["message"]
    # the pool stays in the routing policy as it was (its engines may well serve on): no new
    # version, pass after pass, so routers keep their adaptation
    assert obj["status"]["routingPolicy"] == policy_before
    time.sleep(3 * 2 + 1)
    assert pdcluster(admin, ns)["status"]["routingPolicy"] == policy_before
    # nothing shrinks while a member is unreachable
    assert (replicas(admin, ns, "h20-prefill"), replicas(admin, ns, "h20-decode")) == (3, 5)


# -- trust boundaries: what a CR author cannot make the operator do ------------------------------


class CountingServer:
    """An HTTP listener on loopback that counts requests (``times``: when each arrived) and
    answers ``status`` with ``body``, ``delay_s`` later."""

    def __init__(
        self, status: int = 200, body: bytes = b"{}", port: int | None = None, delay_s: float = 0
    ) -> None:
        counter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                counter.hits += 1
                counter.times.append(time.monotonic())
                time.sleep(delay_s)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.hits = 0
        self.times: list[float] = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port or free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _with_prometheus(doc: dict[str, Any], url: str) -> dict[str, Any]:
    doc["spec"]["workload"] = {"prometheus": {"url": url, "window": "1m", "minRequests": 1}}
    return doc


def _stale_reason(admin: Path, ns: str, reason: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        c = condition(pdcluster(admin, ns), "SignalsStale")
        return c if c and c["status"] == "True" and c["reason"] == reason else None

    found_condition: dict[str, Any] = wait_for(f"SignalsStale {reason}", found, timeout=60)
    return found_condition


def test_a_prometheus_url_the_platform_did_not_allow_is_never_queried(
    admin: Path, operator: OperatorProcess
) -> None:
    ns = "tenant-prom"
    fresh_namespace(admin, ns)
    listener = CountingServer()
    try:
        pd = _with_prometheus(in_ns(fast(sample("pdcluster-h20.yaml")), ns), listener.url)
        apply(admin, in_ns(sample("prefillpool-h200.yaml"), ns), pd)
        c = _stale_reason(admin, ns, "PrometheusNotAllowed")
        assert "--allow-prometheus" in c["message"]
        time.sleep(5)  # a few more passes
        assert listener.hits == 0
        assert pdcluster(admin, ns)["status"]["phase"] == "Holding"
    finally:
        listener.close()


def test_a_failing_prometheus_answer_never_reaches_status_or_logs(
    admin: Path, operator: OperatorProcess, allowed_prometheus: dict[str, int]
) -> None:
    ns = "tenant-prom-500"
    fresh_namespace(admin, ns)
    body = b"TOPSECRET-ANSWER\nsecond line of the body"
    failing = CountingServer(500, body, port=allowed_prometheus["failing"])
    try:
        pd = _with_prometheus(in_ns(fast(sample("pdcluster-h20.yaml")), ns), failing.url)
        apply(admin, in_ns(sample("prefillpool-h200.yaml"), ns), pd)
        c = _stale_reason(admin, ns, "PrometheusUnreachable")
        assert failing.hits > 0 and "HTTP 500" in c["message"]
        events = kubectl(admin, "get", "events", "-n", ns, "-o", "json").stdout
        for text in (json.dumps(pdcluster(admin, ns)), events, operator.log()):
            assert "TOPSECRET" not in text
    finally:
        failing.close()


def test_a_pass_starts_every_interval_whatever_its_latency(
    admin: Path, operator: OperatorProcess, allowed_prometheus: dict[str, int]
) -> None:
    """``intervalSeconds`` runs from one pass's start to the next: a pass that waits 2.5 s on a
    slow Prometheus (one query per pass: it fails) is still started every 4 s, not every 6.5."""
    ns = "cadence"
    fresh_namespace(admin, ns)
    slow = CountingServer(503, b"", port=allowed_prometheus["slow"], delay_s=2.5)
    try:
        pd = _with_prometheus(in_ns(fast(sample("pdcluster-h20.yaml"), intervalSeconds=4), ns),
                              slow.url)  # fmt: skip
        apply(admin, in_ns(sample("prefillpool-h200.yaml"), ns), pd)
        wait_for("seven passes", lambda: slow.hits >= 7, timeout=90)
        gaps = np.diff(slow.times[1:7])  # the first pass may follow kopf's start-up
        assert 3.5 < float(np.median(gaps)) < 5.25, gaps  # before: interval + latency, 6.5 s
        assert min(gaps) > 3.5, gaps  # never more often than the interval
    finally:
        slow.close()


def test_a_tenant_cannot_scale_another_namespace_through_the_operator(
    admin: Path, operator: OperatorProcess
) -> None:
    tenant, victim = "tenant-a", "victim-ns"
    user = "tenant-a-dev"
    fresh_namespace(admin, tenant)
    apply(admin, namespace(victim), deployment("h20-decode", victim, 1))
    apply(admin, namespace(TRUSTED_NS), deployment("shared-decode", TRUSTED_NS, 1))
    apply(
        admin,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "pdcluster-author", "namespace": tenant},
            "rules": [
                {
                    "apiGroups": [PDC.group],
                    "resources": [PDC.plural, POOL.plural],
                    "verbs": ["get", "list", "create", "patch", "update"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "pdcluster-author", "namespace": tenant},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pdcluster-author",
            },
            "subjects": [{"kind": "User", "name": user}],
        },
    )

    def can(verb: str, what: str, ns: str) -> str:
        out = kubectl(admin, "auth", "can-i", verb, what, "-n", ns, f"--as={user}", check=False)
        return out.stdout.strip()

    assert can("create", PDC.name, tenant) == "yes"
    assert can("patch", "deployments/scale", victim) == "no"
    assert can("patch", "deployments/scale", tenant) == "no"

    pd = in_ns(fast(sample("pdcluster-h20.yaml")), tenant)
    pd["spec"]["decode"]["scaleTargetRef"]["namespace"] = victim
    pool = in_ns(sample("prefillpool-h200.yaml"), tenant)
    kubectl(
        admin, "apply", "-f", "-", f"--as={user}", stdin=yaml.safe_dump_all([pool, pd])
    )  # created by the tenant, with the tenant's rights

    def refused() -> dict[str, Any] | None:
        c = condition(pdcluster(admin, tenant), "Degraded")
        return c if c and c["reason"] == "TargetForbidden" else None

    c = wait_for("Degraded TargetForbidden", refused, timeout=60)
    assert victim in c["message"] and "--allow-target-namespace" in c["message"]
    time.sleep(5)  # several passes later, the victim is untouched and nothing shrank
    assert replicas(admin, victim, "h20-decode") == 1
    assert replicas(admin, tenant, "h20-prefill") == 5

    # a namespace the platform allows: the same CR may scale there
    ref = {"namespace": TRUSTED_NS, "name": "shared-decode"}
    patch = json.dumps({"spec": {"decode": {"scaleTargetRef": ref}}})
    kubectl(admin, "patch", PDC.singular, "h20-pd", "-n", tenant, "--type=merge", "-p", patch)
    wait_for("shared decode scaled", lambda: replicas(admin, TRUSTED_NS, "shared-decode") > 1)


@pytest.mark.parametrize(
    ("user_entry", "field"),
    [
        ({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "sh",
                   "args": ["-c", "touch {marker}; echo '{{}}'"]}}, "users[0].user.exec"),
        ({"tokenFile": "{secret_file}"}, "users[0].user.tokenFile"),
        ({"client-certificate": "{secret_file}", "client-key": "{secret_file}"},
         "users[0].user.client-certificate"),
    ],
)  # fmt: skip
def test_member_kubeconfigs_that_run_commands_or_read_files_are_refused(
    admin: Path,
    operator: OperatorProcess,
    tmp_path: Path,
    user_entry: dict[str, Any],
    field: str,
) -> None:
    ns = "tenant-kc-" + field.rsplit(".", 1)[1].lower()
    marker = tmp_path / "the-command-ran"
    secret_file = tmp_path / "operator-local-file"
    secret_file.write_text("FILE-SECRET-LINE-1\nFILE-SECRET-LINE-2\n")
    listener = CountingServer()  # where the kubeconfig would send the operator's requests
    entry = json.loads(
        json.dumps(user_entry)
        .replace("{marker}", str(marker))
        .replace("{secret_file}", str(secret_file))
        .replace("{{}}", "{}")
    )
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": listener.url}}],
        "users": [{"name": "u", "user": entry}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    kc = tmp_path / "member.kubeconfig"
    kc.write_text(yaml.safe_dump(kubeconfig))
    try:
        fresh_namespace(admin, ns)
        member_secret(admin, kc, ns, name="evil-member")
        pool = in_ns(sample("prefillpool-h200.yaml"), ns)
        pool["spec"]["placement"] = {"kubeconfigSecretRef": {"name": "evil-member"}}
        apply(admin, pool, in_ns(fast(sample("pdcluster-h20.yaml")), ns))

        def rejected() -> dict[str, Any] | None:
            c = condition(pdcluster(admin, ns), "Degraded")
            return c if c and c["reason"] == "KubeconfigRejected" else None

        c = wait_for("Degraded KubeconfigRejected", rejected, timeout=60)
        assert field in c["message"]
        time.sleep(4)
        assert not marker.exists() and listener.hits == 0
        events = kubectl(admin, "get", "events", "-n", ns, "-o", "json").stdout
        for text in (json.dumps(pdcluster(admin, ns)), events, operator.log()):
            assert "FILE-SECRET" not in text
        # nothing shrinks while the pool cannot be reached
        assert (replicas(admin, ns, "h20-prefill"), replicas(admin, ns, "h20-decode")) == (5, 3)
    finally:
        listener.close()


def test_one_cr_cannot_make_a_pass_cost_more_than_the_budget(
    admin: Path, operator: OperatorProcess
) -> None:
    ns = "tenant-huge-grid"
    fresh_namespace(admin, ns)
    pd = in_ns(fast(sample("pdcluster-h20.yaml"), planPoolSize=True), ns)
    pd["spec"]["policy"]["threshold"] = {"mode": "Auto", "stepTokens": 1}
    apply(admin, in_ns(sample("prefillpool-h200.yaml"), ns), pd)

    def too_large() -> dict[str, Any] | None:
        c = condition(pdcluster(admin, ns), "Ready")
        return c if c and c["reason"] == "PlanTooLarge" else None

    c = wait_for("Ready PlanTooLarge", too_large, timeout=60)
    assert "stepTokens" in c["message"]
    assert (replicas(admin, ns, "h20-prefill"), replicas(admin, ns, "h20-decode")) == (5, 3)


def test_a_deleted_pdclusters_series_leave_metrics(admin: Path, operator: OperatorProcess) -> None:
    ns = "short-lived"
    fresh_namespace(admin, ns)
    apply(
        admin,
        in_ns(sample("prefillpool-h200.yaml"), ns),
        in_ns(fast(sample("pdcluster-h20.yaml")), ns),
    )
    mine = f'namespace="{ns}",pdcluster="h20-pd"'
    wait_for("its series", lambda: f"prfaas_plan_threshold_tokens{{{mine}}}" in operator.metrics())
    assert f"prfaas_plan_egress_bytes_per_second{{{mine}}}" in operator.metrics()
    kubectl(admin, "delete", PDC.singular, "h20-pd", "-n", ns, "--wait=true")
    wait_for("no series of it", lambda: mine not in operator.metrics(), timeout=30)


def test_the_operator_does_not_fight_another_writer(admin: Path, operator: OperatorProcess) -> None:
    ns = "contested"
    fresh_namespace(admin, ns)
    apply(
        admin,
        in_ns(sample("prefillpool-h200.yaml"), ns),
        in_ns(fast(sample("pdcluster-h20.yaml")), ns),
    )

    def at_plan() -> bool:
        c = condition(pdcluster(admin, ns), "PlanApplied")
        return bool(c and c["status"] == "True")

    wait_for("converged", at_plan, timeout=90)  # written after the writes were counted

    def writes() -> float:
        lines = [line for line in operator.metrics().splitlines() if ns in line]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if "scale_actions_total" in line)

    before = writes()
    deadline = time.monotonic() + 12  # an HPA-like writer holds decode at 2, several passes long
    while time.monotonic() < deadline:
        kubectl(admin, "scale", "deployment", "h20-decode", "-n", ns, "--replicas=2")
        time.sleep(0.5)
    c = condition(pdcluster(admin, ns), "ScaleContested")
    assert c is not None and c["status"] == "True" and "decode" in c["message"]
    assert writes() == before, "the operator wrote /scale while another writer held decode"
    assert replicas(admin, ns, "h20-decode") == 2
    # the spec changes (the platform team removed the other writer): the operator acts again
    kubectl(admin, "patch", PDC.singular, "h20-pd", "-n", ns, "--type=merge",
            "-p", json.dumps({"spec": {"policy": {"cooldownSeconds": 1}}}))  # fmt: skip
    wait_for("decode back toward the plan", lambda: replicas(admin, ns, "h20-decode") > 2)

    def released() -> bool:  # written by the same pass, just after its /scale write
        c = condition(pdcluster(admin, ns), "ScaleContested")
        return bool(c is not None and c["status"] == "False")

    wait_for("ScaleContested released", released, timeout=15)
