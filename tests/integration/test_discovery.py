"""Engines found from EndpointSlices on real API servers: the router follows its local groups'
slices (scale-up, readiness, termination, deletion) with only read rights in its namespace, and
the operator follows a PrefillPool's slices in its member cluster and publishes them; no request
reaches an engine after it left, and none is lost while one drains.

The test API servers have no kubelet or controllers, so there are no pods: the test writes the
EndpointSlices as the EndpointSlice controller would (labelled ``kubernetes.io/service-name``,
ready/serving/terminating conditions) for engines it runs on 127.0.0.1. The API server refuses
loopback addresses in EndpointSlices, so each engine is the FQDN ``e<port>.localhost`` and the
router runs with ``--resolve-localhost`` (RFC 6761: ``*.localhost`` is the loopback).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_helpers import ROOT, OperatorProcess, deployment, member_secret, wait_for

from prfaas.api import PDCluster
from prfaas.engine.server import expected_text
from prfaas_dev.cluster import ControlPlane
from prfaas_dev.http import http_get, http_post_json, scrape
from prfaas_dev.kubectl import kubectl
from prfaas_dev.stack import Engine, Service, Stack

pytestmark = pytest.mark.integration
NS = "discovery"
PDC = PDCluster.resource
# the bound: a slice change is in the routing decisions within this (typically 0.3-2 s; the
# margin is for a loaded 2-core machine, where a pass or a watch event can wait for a core)
FOLLOW_S = 10.0
T = 19_400  # the case study's threshold: longer prompts go to the pool
SERVICE_LABEL = "kubernetes.io/service-name"

READY = {"ready": True, "serving": True, "terminating": False}
STARTING = {"ready": False, "serving": False, "terminating": False}
TERMINATING = {"ready": False, "serving": True, "terminating": True}

ROUTER_RBAC = f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: prfaas-router, namespace: {NS}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: prfaas-router, namespace: {NS}}}
rules:
  - apiGroups: [{PDC.group}]
    resources: [{PDC.plural}]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: prfaas-router, namespace: {NS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: prfaas-router}}
subjects: [{{kind: ServiceAccount, name: prfaas-router, namespace: {NS}}}]
"""


def endpoint_slice(service: str, engine: Engine, conditions: dict[str, bool]) -> dict[str, Any]:
    """What the EndpointSlice controller writes for one pod of ``service`` (one slice per
    engine here: each listens on its own port)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-{engine.port}",
            "namespace": NS,
            "labels": {SERVICE_LABEL: service},
        },
        "addressType": "FQDN",
        "ports": [{"name": "http", "port": engine.port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [f"e{engine.port}.localhost"], "conditions": conditions}],
    }


def put_slice(kc: Path, service: str, engine: Engine, conditions: dict[str, bool]) -> None:
    doc = yaml.safe_dump(endpoint_slice(service, engine, conditions))
    kubectl(
        kc,
        "apply",
        "--server-side",
        "--field-manager=endpointslice-controller",
        "-f",
        "-",
        stdin=doc,
    )


def delete_slice(kc: Path, service: str, engine: Engine) -> None:
    kubectl(kc, "-n", NS, "delete", "endpointslice", f"{service}-{engine.port}", "--wait=false")


def sample(name: str, **policy: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "manifests/samples" / name).read_text())
    doc = copy.deepcopy(doc)
    doc["metadata"]["namespace"] = NS
    if "policy" in doc["spec"]:
        doc["spec"]["policy"].update({"intervalSeconds": 2, "cooldownSeconds": 0, **policy})
    return doc


def apply(kc: Path, *docs: dict[str, Any]) -> None:
    kubectl(
        kc,
        "apply",
        "--server-side",
        "--field-manager=tests",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(docs),
    )


@dataclass
class System:
    hub: Path  # admin kubeconfig of the PD cluster's API server
    member: ControlPlane  # the PrefillPool's datacenter
    router_kc: Path
    operator: OperatorProcess
    prefill: list[Engine]
    decode: list[Engine]
    pool: list[Engine]
    router: Service
    pool_exec: ThreadPoolExecutor
    stack: Stack

    def policy(self) -> dict[str, Any]:
        return dict(json.loads(http_get(f"{self.router.admin_url}/policy")[1]))

    def status_policy(self) -> dict[str, Any]:
        return routing_policy(self.hub)

    def until(self, what: str, probe: Callable[[], bool], bound: float = FOLLOW_S) -> None:
        """Wait for ``probe`` to hold; fail past ``bound`` seconds."""
        wait_for(what, probe, timeout=bound, every=0.05)

    def routes(self, prefill: list[Engine], decode: list[Engine]) -> Callable[[], bool]:
        def probe() -> bool:
            p = self.policy()
            return bool(
                sorted(p["prefillEndpoints"]) == sorted(e.url for e in prefill)
                and sorted(p["decodeEndpoints"]) == sorted(e.url for e in decode)
            )

        return probe

    def send(self, n: int, tokens: int, max_tokens: int) -> list[Future[tuple[int, bytes]]]:
        """``n`` requests at once, each a fresh prompt (no prefix cache hit anywhere)."""

        def one(k: int) -> tuple[int, bytes]:
            base = (time.monotonic_ns() + k) * 1_000_003 % 2_000_000_000
            body = {
                "model": "sim-model",
                "prompt": list(range(base, base + tokens)),
                "max_tokens": max_tokens,
            }
            return http_post_json(self.router.url + "/v1/completions", body, timeout=120)

        return [self.pool_exec.submit(one, k) for k in range(n)]


def routing_policy(kc: Path) -> dict[str, Any]:
    """``status.routingPolicy`` of the PDCluster, as the operator published it."""
    out = kubectl(kc, "-n", NS, "get", PDC.singular, "h20-pd", "-o", "json").stdout
    return dict((json.loads(out).get("status") or {}).get("routingPolicy") or {})


def served(engine: Engine, phase: str) -> float:
    """Requests the engine itself saw, by phase (its own counter)."""
    return scrape(engine.url + "/metrics").get(
        f'prfaas_engine_requests_total{{phase="{phase}"}}', 0
    )


def all_answered(futures: list[Future[tuple[int, bytes]]], max_tokens: int) -> None:
    for f in futures:
        status, body = f.result(timeout=180)
        assert status == 200, body[:300]
        assert json.loads(body)["choices"][0]["text"] == expected_text(max_tokens)


@pytest.fixture(scope="module")
def system(
    control_plane: ControlPlane,
    control_plane_factory: Callable[[], ControlPlane],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[System]:
    hub = Path(control_plane.kubeconfig)
    member = control_plane_factory()
    member_kc = Path(member.kubeconfig)
    tmp = tmp_path_factory.mktemp("discovery")
    kubectl(hub, "apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl(hub, "wait", "--for=condition=Established", "--timeout=60s", f"crd/{PDC.name}")
    kubectl(hub, "apply", "-f", str(ROOT / "manifests/operator"))
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    apply(hub, ns, deployment("h20-prefill", NS, 3), deployment("h20-decode", NS, 5))
    apply(member_kc, ns, deployment("h200-prefill", NS, 4))
    member_secret(hub, member_kc, NS)
    kubectl(hub, "apply", "-f", "-", stdin=ROUTER_RBAC)
    router_kc = control_plane.kubeconfig_for_serviceaccount(NS, "prfaas-router", path=tmp / "sa")
    op_kc = control_plane.kubeconfig_for_serviceaccount("prfaas-system", "prfaas-operator")
    operator = OperatorProcess(Path(op_kc), tmp / "operator.log").start()
    try:
        with Stack(tmp / "logs") as stack, ThreadPoolExecutor(32) as pool_exec:
            prefill = [stack.engine("prefill", "h20", 1.0) for _ in range(3)]
            decode = [stack.engine("decode", "h20", 1.0) for _ in range(3)]
            pool = [stack.engine("prefill", "h200", 1.0) for _ in range(2)]
            put_slice(hub, "h20-prefill", prefill[0], READY)
            put_slice(hub, "h20-decode", decode[0], READY)
            put_slice(member_kc, "h200-prefill", pool[0], READY)
            h200 = sample("prefillpool-h200.yaml")
            h200["spec"]["placement"] = {"kubeconfigSecretRef": {"name": "dc-east"}}
            apply(hub, h200, sample("pdcluster-h20.yaml", mode="Observe"))

            def published() -> bool:
                pools = routing_policy(hub).get("prefillPools") or [{}]
                return bool(pools[0].get("endpoints"))

            wait_for("the operator's first policy", published, timeout=90)
            # the first pass waited for the pool's first list: its first policy names the engines
            assert routing_policy(hub)["version"] == 1
            router = stack.router(
                [
                    "--pdcluster",
                    "h20-pd",
                    "-n",
                    NS,
                    "--kubeconfig",
                    str(router_kc),
                    "--resolve-localhost",
                    "--scrape-interval",
                    "0.5",
                    "--log-format",
                    "plain",
                ],
                "router-discovery",
                "/readyz",
            )
            yield System(
                hub, member, router_kc, operator, prefill, decode, pool, router, pool_exec, stack
            )
    finally:
        operator.stop()  # also when a start-up above failed


def test_least_privilege_is_enough(system: System) -> None:
    """The router lists and watches EndpointSlices in its namespace and does nothing else."""
    sa = system.router_kc
    for verb, resource, where, allowed in (
        ("watch", "endpointslices.discovery.k8s.io", NS, "yes"),
        ("list", "endpointslices.discovery.k8s.io", NS, "yes"),
        ("get", "endpointslices.discovery.k8s.io", NS, "no"),
        ("create", "endpointslices.discovery.k8s.io", NS, "no"),
        ("list", "endpointslices.discovery.k8s.io", "default", "no"),
        ("list", "pods", NS, "no"),
        ("get", "secrets", NS, "no"),
        ("patch", PDC.plural, NS, "no"),
    ):
        out = kubectl(sa, "-n", where, "auth", "can-i", verb, resource, check=False).stdout
        assert out.strip() == allowed, (verb, resource, where, out)
    policy = system.status_policy()  # what the operator published for the Services
    assert policy["prefillDiscovery"] == {
        "namespace": NS,
        "labelSelector": f"{SERVICE_LABEL}=h20-prefill",
    }
    assert policy["prefillEndpoints"] == [] and "decodeDiscovery" in policy


def test_the_router_follows_the_local_endpointslices(system: System) -> None:
    s, hub = system, system.hub
    p0, p1, p2 = s.prefill
    d0, d1, d2 = s.decode
    s.until("P0 and D0 only", s.routes([p0], [d0]), bound=30)

    # scale-up: new pods are listed not ready first; none of them gets traffic until ready
    put_slice(hub, "h20-prefill", p1, STARTING)
    put_slice(hub, "h20-decode", d1, STARTING)
    time.sleep(1.0)
    assert s.routes([p0], [d0])(), s.policy()
    t0 = time.monotonic()
    put_slice(hub, "h20-prefill", p1, READY)
    put_slice(hub, "h20-decode", d1, READY)
    s.until("the new pods in the decisions", s.routes([p0, p1], [d0, d1]))
    ready_s = time.monotonic() - t0  # from the first write
    # the new pods are used: requests a little apart, so each choice sees the others' load
    # (decisions made at the very same moment all see the same idle engines)
    spread = []
    for _ in range(6):
        spread += s.send(1, 2_000, 60)
        time.sleep(0.5)
    all_answered(spread, 60)
    assert served(p1, "prefill") > 0 and served(d1, "decode") > 0

    # termination with requests in flight: they finish there; nothing new goes there
    # ~1.6 s of prefill, 6 s of decode each (H20, real time): still in flight when the change is
    # seen, even on a loaded machine
    burst_a = s.send(12, 8_000, 240)

    def busy() -> Engine | None:
        """A decode engine with requests in flight while P0 has some too."""
        engines = s.policy()["engines"]
        if engines[p0.url]["inFlight"] == 0:
            return None
        return next((d for d in (d0, d1) if engines[d.url]["inFlight"] > 0), None)

    gone = wait_for("requests in flight at P0 and at a decode engine", busy, 20, 0.05)
    kept = d1 if gone is d0 else d0
    t0 = time.monotonic()
    put_slice(hub, "h20-prefill", p0, TERMINATING)
    put_slice(hub, "h20-decode", gone, TERMINATING)
    s.until("the terminating ones out of the decisions", s.routes([p1], [kept]))
    drain_s = time.monotonic() - t0
    # they had requests in flight when the change came (busy() above); now they are draining
    # them, or done already: never routable again
    engines = s.policy()["engines"]
    for e in (p0, gone):
        assert engines.get(e.url, {"draining": True}).get("draining"), engines
    time.sleep(0.3)  # what was sent before the router saw the change has landed
    before = served(p0, "prefill"), served(gone, "decode")
    burst_b = s.send(8, 2_000, 8)  # new work while they drain
    all_answered(burst_a, 240)  # none lost while draining
    all_answered(burst_b, 8)
    assert (served(p0, "prefill"), served(gone, "decode")) == before  # nothing new there
    wait_for(
        "drained",
        lambda: not any(e.get("draining") for e in s.policy()["engines"].values()),
        timeout=10,
    )

    # gone: the slices go, the engines stop; a third pod comes, one fails its readiness probe
    delete_slice(hub, "h20-prefill", p0)
    delete_slice(hub, "h20-decode", gone)
    p0.proc.stop()
    gone.proc.stop()
    put_slice(hub, "h20-prefill", p2, READY)
    put_slice(hub, "h20-decode", d2, READY)
    s.until("the third pods", s.routes([p1, p2], [kept, d2]))
    t0 = time.monotonic()
    put_slice(hub, "h20-prefill", p1, STARTING)
    s.until("P1 out while unready", s.routes([p2], [kept, d2]))
    unready_s = time.monotonic() - t0
    all_answered(s.send(6, 2_000, 8), 8)  # a stopped engine would have failed these
    put_slice(hub, "h20-prefill", p1, READY)
    s.until("P1 back", s.routes([p1, p2], [kept, d2]))
    print(
        f"\nrouter follows EndpointSlices: ready {ready_s:.2f} s, terminating {drain_s:.2f} s, "
        f"unready {unready_s:.2f} s (bound {FOLLOW_S} s; from the kubectl call)"
    )
    assert "Forbidden" not in s.router.proc.tail(300)


def test_the_operator_publishes_the_pool_s_engines_from_its_cluster(system: System) -> None:
    """The router has no credentials for the member cluster: the operator lists the pool's
    EndpointSlices there and publishes its ready engines, a new policy version per change."""
    s, member = system, Path(system.member.kubeconfig)
    h0, h1 = s.pool

    def pool_in_status(*engines: Engine) -> Callable[[], bool]:
        want = sorted(f"http://e{e.port}.localhost:{e.port}" for e in engines)
        return lambda: bool(sorted(s.status_policy()["prefillPools"][0]["endpoints"]) == want)

    def pool_in_router(*engines: Engine) -> Callable[[], bool]:
        want = sorted(e.url for e in engines)
        return lambda: bool(sorted(s.policy()["pools"][0]["endpoints"]) == want)

    s.until("H0 in the router", pool_in_router(h0), bound=30)
    version = s.status_policy()["version"]
    t0 = time.monotonic()
    put_slice(member, "h200-prefill", h1, READY)
    s.until("H1 in the status", pool_in_status(h0, h1))
    s.until("H1 in the router", pool_in_router(h0, h1))
    grown_s = time.monotonic() - t0
    assert s.status_policy()["version"] == version + 1
    all_answered(s.send(4, T + 5_000, 8), 8)  # long prompts: offloaded
    assert served(h1, "prefill") > 0

    burst_a = s.send(6, T + 20_000, 8)
    wait_for(
        "a pool prefill in flight at H0",
        lambda: s.policy()["engines"][h0.url]["inFlight"] > 0,
        timeout=20,
        every=0.05,
    )
    t0 = time.monotonic()
    put_slice(member, "h200-prefill", h0, TERMINATING)
    s.until("H0 out of the router's pool", pool_in_router(h1))
    leave_s = time.monotonic() - t0
    assert s.policy()["engines"].get(h0.url, {"draining": True}).get("draining")
    time.sleep(0.3)
    before = served(h0, "prefill")
    burst_b = s.send(4, T + 5_000, 8)
    all_answered(burst_a, 8)
    all_answered(burst_b, 8)
    assert served(h0, "prefill") == before
    print(
        f"\noperator publishes the pool's engines: added {grown_s:.2f} s, terminating "
        f"{leave_s:.2f} s to the router (bound {FOLLOW_S} s)"
    )

    log = s.operator.log()
    assert "Forbidden" not in log and "Traceback" not in log


def test_a_router_keeps_its_engines_while_its_api_server_is_away(
    system: System, tmp_path: Path
) -> None:
    """A router whose PD cluster runs in the member datacenter reads its policy from a file (the
    ConfigMap the operator writes there) and lists its groups' EndpointSlices in that cluster;
    when that API server goes away, the engines it listed last keep serving."""
    s, member = system, Path(system.member.kubeconfig)
    p2, d2 = s.prefill[2], s.decode[2]
    put_slice(member, "h20-prefill", p2, READY)
    put_slice(member, "h20-decode", d2, READY)
    source = {"namespace": NS, "port": "http"}
    policy = {
        "version": 1,
        "thresholdTokens": None,
        "prefillDiscovery": {**source, "labelSelector": f"{SERVICE_LABEL}=h20-prefill"},
        "decodeDiscovery": {**source, "labelSelector": f"{SERVICE_LABEL}=h20-decode"},
    }
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    args = ["--policy-file", str(tmp_path / "policy.json"), "--kubeconfig", str(member)]
    router = s.stack.router([*args, "--resolve-localhost", "--log-format", "plain"], "router-b")
    seen = json.loads(http_get(f"{router.admin_url}/policy")[1])
    assert (seen["prefillEndpoints"], seen["decodeEndpoints"]) == ([p2.url], [d2.url])
    system.member.stop()
    wait_for("the watch to notice", lambda: "keeping the last list" in router.proc.tail(50), 60)
    seen = json.loads(http_get(f"{router.admin_url}/policy")[1])
    assert (seen["prefillEndpoints"], seen["decodeEndpoints"]) == ([p2.url], [d2.url])
    status, body = http_post_json(
        router.url + "/v1/completions", {"prompt": list(range(500)), "max_tokens": 4}, timeout=60
    )
    assert status == 200, body
