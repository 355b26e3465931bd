"""The whole PrfaaS loop on two real kind clusters, from the project's own image.

dc-west (PD cluster) runs the chart (operator under its ServiceAccount and RBAC, the router),
the H20 engines and the shaped link; dc-east (PrefillPool) runs the H200 engines. Nodes are real
kubelets in Docker containers; the scheduler places engine pods on GPU node groups; the
operator's ``/scale`` writes create and delete real pods; the case study runs 10x faster
(``prfaas_dev.kind_deploy``). The module creates what it needs (the project's Docker engine,
both clusters) and removes what it created, also when a test fails; clusters that already
exist (``make kind``) are reused and left running.

The tests run in order and share the system: plan → placement → traffic → a full node group →
the pool's pods deleted under load → the operator pod killed → dc-east off the network → helm
upgrade and uninstall.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import random
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from prfaas.api import PDCluster, PrefillPool
from prfaas_dev import image
from prfaas_dev.demo.scenario import NAMESPACE
from prfaas_dev.http import scrape_text
from prfaas_dev.kind import ACCELERATOR, EAST, GPU, HACK, REGION, WEST, Kind, KindError
from prfaas_dev.kind_deploy import (
    GROUP_LABEL,
    LINK,
    OPERATOR_NS,
    RELEASE,
    Options,
    System,
    deploy,
    helm,
    released,
    undeploy,
    wait_rollouts,
)
from prfaas_dev.kubectl import KubeError, kubectl

pytestmark = pytest.mark.integration

T = 19_400  # the case study's planned threshold (Table 6)
PLAN = {"h200-prefill": 4, "h20-prefill": 3, "h20-decode": 5}
LONG, SHORT = 40_000, 3_000


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clusters() -> Iterator[Kind]:
    """Both clusters up; what this fixture started (Docker, clusters) it removes again."""
    k = Kind()
    docker_was_up = k.docker_running()
    existed = set(k.existing()) if docker_was_up else set()

    def tidy() -> None:
        try:
            if existed != set(k.specs):
                k.down()
        finally:
            if not docker_was_up:
                subprocess.run([str(HACK / "kind" / "docker.sh"), "stop"], check=False)

    failure = ""
    try:
        k.up()
    except (KindError, KubeError, subprocess.SubprocessError) as exc:
        failure = f"the kind clusters did not come up: {exc}"
    if failure:
        tidy()
        pytest.fail(failure, pytrace=False)
    try:
        yield k
    finally:
        tidy()


@pytest.fixture(scope="module")
def system(clusters: Kind) -> Iterator[System]:
    """The system freshly deployed from the image of this tree; removed again afterwards."""
    failure = ""
    try:
        if released(clusters):
            undeploy(clusters)  # a fresh start: the tests count restarts, events, pods
        s = deploy(clusters, Options(image=image.build()))
        wait_rollouts(s, 300)
    except (KindError, KubeError, image.ImageError, subprocess.SubprocessError) as exc:
        failure = f"the system did not deploy: {exc}"
    if failure:
        pytest.fail(failure, pytrace=False)
    try:
        yield s
    finally:
        # best effort: the clusters go away with the module anyway when it created them
        with contextlib.suppress(KindError, KubeError, subprocess.SubprocessError):
            undeploy(clusters)


# -- helpers ---------------------------------------------------------------------------------
def wait_for(what: str, cond: Callable[[], bool], timeout: float, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():
                return
        except (KindError, KubeError, subprocess.SubprocessError, KeyError, ValueError):
            pass  # not there yet (an object missing, a cluster briefly away)
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(every)


def get(kubeconfig: Path, *args: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(kubectl(kubeconfig, *args, "-o", "json").stdout)
    return obj


def cluster_of(s: System, group: str) -> Path:
    return s.east if group == "h200-prefill" else s.west


def replicas(s: System, group: str) -> int:
    dep = get(cluster_of(s, group), "-n", NAMESPACE, "get", "deployment", group)
    return int(dep["spec"]["replicas"])


def is_ready(pod: dict[str, Any]) -> bool:
    conds = pod.get("status", {}).get("conditions") or []
    deleting = pod["metadata"].get("deletionTimestamp")
    return not deleting and any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def ready_pods(s: System, group: str) -> list[dict[str, Any]]:
    return [p for p in s.engines(cluster_of(s, group), group) if is_ready(p)]


def all_ready(s: System) -> bool:
    return all(len(ready_pods(s, g)) == n for g, n in PLAN.items())


def condition(s: System, ctype: str) -> dict[str, Any]:
    for c in s.pdcluster().get("status", {}).get("conditions", []):
        if c["type"] == ctype:
            return dict(c)
    return {}


def prompt_tokens(s: System, group: str) -> float:
    """vllm:prompt_tokens_total summed over the group's pods (each read through the API server)."""
    total = 0.0
    for pod in ready_pods(s, group):
        text = s.proxy(cluster_of(s, group), pod["metadata"]["name"], 8000, "/metrics")
        total += sum(v for k, v in scrape_text(text).items() if k.startswith("vllm:prompt_tokens"))
    return total


def router_endpoints(s: System, group: str) -> set[str]:
    """The addresses of ``group``'s engines that the router has on its list (from the
    ``endpoint`` label of its per-engine gauge, read through its NodePort)."""
    u = urllib.parse.urlsplit(s.router_url)
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    pods = {p["status"].get("podIP") for p in s.engines(cluster_of(s, group), group)}
    east = ipaddress.ip_network(EAST.pod_subnet)
    found = set()
    for line in text.splitlines():
        if line.startswith("prfaas_router_engine_up{"):
            url = line.split('endpoint="', 1)[1].split('"', 1)[0]
            host = urllib.parse.urlsplit(url).hostname or ""
            in_east = ipaddress.ip_address(host) in east
            # dc-east's addresses are all the pool's: a deleted pod's stays visible there
            if in_east if group == "h200-prefill" else host in pods:
                found.add(host)
    return found


def follows(s: System, group: str) -> bool:
    """The router lists exactly the group's ready pods (and no other pod of the group)."""
    return router_endpoints(s, group) == {p["status"]["podIP"] for p in ready_pods(s, group)}


def link_bytes(s: System) -> float:
    pod = s.engines(s.west, LINK)[0]["metadata"]["name"]
    return scrape_text(s.proxy(s.west, pod, 9900, "/metrics"))["prfaas_link_bytes_total"]


@dataclass
class Answer:
    tokens: int
    status: int
    prefill: str | None  # X-PrfaaS-Prefill: pool | local
    reason: str | None
    text: str


def complete(router: str, tokens: int, timeout: float = 60) -> Answer:
    """One OpenAI completion through the router's NodePort (fresh random ids: no cache hits)."""
    u = urllib.parse.urlsplit(router)
    body = json.dumps(
        {
            "model": "sim-model",
            "prompt": [random.randrange(1, 150_000) for _ in range(tokens)],
            "max_tokens": 8,
        }
    )
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=timeout)
    try:
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read().decode()
        text = json.loads(raw)["choices"][0]["text"] if resp.status == 200 else raw
        return Answer(
            tokens,
            resp.status,
            resp.getheader("X-PrfaaS-Prefill"),
            resp.getheader("X-PrfaaS-Reason"),
            text,
        )
    except OSError as exc:
        return Answer(tokens, 0, None, None, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def send(router: str, lengths: list[int], workers: int = 6) -> list[Answer]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda n: complete(router, n), lengths))


class Load:
    """Long and short prompts at a steady pace from a thread, every answer kept."""

    def __init__(self, router: str, every_s: float = 0.15) -> None:
        self.router, self.every_s = router, every_s
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(8)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        futures = []
        k = 0
        while not self._stop.is_set():
            futures.append(self._pool.submit(complete, self.router, LONG if k % 2 else SHORT))
            k += 1
            time.sleep(self.every_s)
        self.answers = [f.result() for f in futures]

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)
        self._pool.shutdown()


def lost(answers: list[Answer]) -> list[Answer]:
    return [a for a in answers if a.status != 200 or not a.text.startswith(" tok0")]


# -- the tests, in order ----------------------------------------------------------------------
def test_operator_pod_plans_and_the_scheduler_places_the_engines(system: System) -> None:
    s = system
    (op,) = get(
        s.west, "-n", OPERATOR_NS, "get", "pods", "-l", "app.kubernetes.io/component=operator"
    )["items"]
    assert op["spec"]["serviceAccountName"] == RELEASE
    assert op["spec"]["securityContext"]["runAsUser"] == 65532
    assert op["spec"]["containers"][0]["image"] == s.opts.image
    assert op["spec"]["containers"][0]["args"][0] == "operator"

    def at_plan() -> bool:
        st = s.pdcluster()["status"]
        plan = st["plan"]
        return (
            (plan["nPrfaas"], plan["nPrefill"], plan["nDecode"]) == (4, 3, 5)
            and condition(s, "PlanApplied").get("status") == "True"
            and all(replicas(s, g) == n for g, n in PLAN.items())
        )

    wait_for("the plan 4/3/5 applied to the Deployments", at_plan, 240)
    st = s.pdcluster()["status"]
    assert st["plan"]["thresholdTokens"] == T and st["routingPolicy"]["thresholdTokens"] == T
    wait_for("every engine pod Ready", lambda: all_ready(s), 240)
    where = {
        "h200-prefill": ("NVIDIA-H200", EAST.name),
        "h20-prefill": ("NVIDIA-H20", WEST.name),
        "h20-decode": ("NVIDIA-H20", WEST.name),
    }
    for group, (accelerator, region) in where.items():
        kc = cluster_of(s, group)
        for pod in ready_pods(s, group):
            labels = get(kc, "get", "node", pod["spec"]["nodeName"])["metadata"]["labels"]
            assert (labels[ACCELERATOR], labels[REGION]) == (accelerator, region), pod["spec"]
            assert pod["spec"]["containers"][0]["resources"]["limits"][GPU] == "1"
    # discovery, not static URLs: the router lists each group's ready pods, dc-east's too (the
    # operator publishes those; the router has no credentials for dc-east)
    for group in PLAN:
        wait_for(f"the router following {group}'s ready pods", lambda g=group: follows(s, g), 30)


def test_long_prompts_are_prefilled_in_dc_east_short_ones_locally(system: System) -> None:
    s = system
    pool0, local0, link0 = (
        prompt_tokens(s, "h200-prefill"),
        prompt_tokens(s, "h20-prefill"),
        link_bytes(s),
    )
    answers = send(s.router_url, [LONG] * 6 + [SHORT] * 6)
    assert not lost(answers), lost(answers)
    assert [a.prefill for a in answers] == ["pool"] * 6 + ["local"] * 6
    # the engines' own counters: the pool prefilled exactly the long prompts, PD-P the short
    assert prompt_tokens(s, "h200-prefill") - pool0 == 6 * LONG
    assert prompt_tokens(s, "h20-prefill") - local0 == 6 * SHORT
    assert link_bytes(s) > link0  # the pool's KVCache crossed the shaped link


def test_a_full_node_group_leaves_pods_pending_and_the_operator_says_so(system: System) -> None:
    s = system
    pool = f"{PrefillPool.resource.plural}/h200-pool"

    def bounds(lo: int, hi: int) -> None:
        patch = json.dumps({"spec": {"replicas": {"min": lo, "max": hi}}})
        kubectl(s.west, "-n", NAMESPACE, "patch", pool, "--type=merge", "-p", patch)

    bounds(5, 5)  # dc-east's H200 group has 4 GPUs
    try:

        def pending_reported() -> bool:
            c = condition(s, "Degraded")
            return c.get("reason") == "Unschedulable" and "Insufficient nvidia.com/gpu" in c.get(
                "message", ""
            )

        wait_for("Degraded/Unschedulable naming the GPUs", pending_reported, 120)
        assert replicas(s, "h200-prefill") == 5
        assert len(ready_pods(s, "h200-prefill")) == 4  # the fifth cannot be placed
        c = condition(s, "Degraded")
        assert c["status"] == "True" and "prefillPool: 1 pod(s) Pending" in c["message"]
    finally:
        bounds(1, 4)
    wait_for(
        "the pool back at 4 and the report cleared",
        lambda: replicas(s, "h200-prefill") == 4 and condition(s, "Degraded")["status"] == "False",
        120,
    )
    wait_for("back at the plan", lambda: all(replicas(s, g) == n for g, n in PLAN.items()), 120)


def test_deleting_the_pools_pods_under_load_fails_open_without_losing_a_request(
    system: System,
) -> None:
    s = system
    wait_for("every engine Ready", lambda: all_ready(s), 180)
    with Load(s.router_url) as load:
        time.sleep(4)
        kubectl(
            s.east,
            "-n",
            NAMESPACE,
            "delete",
            "pods",
            "-l",
            f"{GROUP_LABEL}=h200-prefill",
            "--wait=false",
        )
        time.sleep(12)
    answers = load.answers
    assert len(answers) > 50
    assert not lost(answers), lost(answers)[:5]
    longs = [a for a in answers if a.tokens == LONG]
    assert any(a.prefill == "pool" for a in longs)  # before the deletion
    assert any(a.prefill == "local" for a in longs), "nothing failed over to local prefill"
    wait_for("the pool's pods replaced", lambda: len(ready_pods(s, "h200-prefill")) == 4, 180)
    # new pods, new addresses: the router follows them (the operator republishes them) and
    # lists none of the deleted ones
    wait_for("the router following the new pool pods", lambda: follows(s, "h200-prefill"), 60)
    wait_for(
        "long prompts offloaded again",
        lambda: complete(s.router_url, LONG).prefill == "pool",
        60,
        every=2,
    )


def _scaled_events(s: System) -> set[str]:
    raw = get(
        s.west,
        "-n",
        NAMESPACE,
        "get",
        "events",
        "--field-selector",
        f"involvedObject.kind={PDCluster.resource.kind},reason=Scaled",
    )
    return {e["metadata"]["uid"] for e in raw["items"]}


def test_a_killed_operator_pod_resumes_from_status_without_scale_churn(system: System) -> None:
    s = system
    wait_for("at plan", lambda: all(replicas(s, g) == n for g, n in PLAN.items()), 120)
    generations = {
        g: get(cluster_of(s, g), "-n", NAMESPACE, "get", "deployment", g)["metadata"]["generation"]
        for g in PLAN
    }
    version = s.pdcluster()["status"]["routingPolicy"]["version"]
    events = _scaled_events(s)
    selector = "app.kubernetes.io/component=operator"
    (old,) = get(s.west, "-n", OPERATOR_NS, "get", "pods", "-l", selector)["items"]
    killed = time.time()
    kubectl(s.west, "-n", OPERATOR_NS, "delete", "pod", old["metadata"]["name"], "--wait=false")

    def restarted() -> bool:
        pods = get(s.west, "-n", OPERATOR_NS, "get", "pods", "-l", selector)["items"]
        return any(p["metadata"]["uid"] != old["metadata"]["uid"] and is_ready(p) for p in pods)

    wait_for("a new operator pod Ready", restarted, 180)

    def reconciled_after_kill() -> bool:
        at = s.pdcluster()["status"]["plan"]["computedAt"]
        return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() > killed

    wait_for("a pass of the new operator", reconciled_after_kill, 120)
    time.sleep(12)  # four more passes (intervalSeconds 3)
    for g in PLAN:
        dep = get(cluster_of(s, g), "-n", NAMESPACE, "get", "deployment", g)
        assert dep["metadata"]["generation"] == generations[g], f"{g} was rewritten"
        assert dep["spec"]["replicas"] == PLAN[g]
    assert s.pdcluster()["status"]["routingPolicy"]["version"] == version
    assert _scaled_events(s) == events  # no scale churn after the restart


def test_dc_east_off_the_network_degrades_nothing_shrinks_traffic_stays_local(
    system: System,
) -> None:
    s, k = system, system.kind
    wait_for("at plan", lambda: all(replicas(s, g) == n for g, n in PLAN.items()), 120)
    west = {g: replicas(s, g) for g in ("h20-prefill", "h20-decode")}
    ips = k.disconnect(EAST.name)
    try:

        def degraded() -> bool:
            c = condition(s, "Degraded")
            return c.get("status") == "True" and c.get("reason") == "Unreachable"

        wait_for("Degraded/Unreachable", degraded, 90)
        answers = send(s.router_url, [LONG] * 4 + [SHORT] * 4, workers=4)
        assert not lost(answers), lost(answers)
        assert all(a.prefill == "local" for a in answers)  # the pool is out of reach
        time.sleep(6)  # two more passes
        assert {g: replicas(s, g) for g in west} == west  # nothing shrank
        st = s.pdcluster()["status"]
        assert st["phase"] == "Degraded"
    finally:
        k.reconnect(ips)
    wait_for("Degraded cleared", lambda: condition(s, "Degraded").get("status") == "False", 180)
    wait_for(
        "long prompts offloaded to dc-east again",
        lambda: complete(s.router_url, LONG).prefill == "pool",
        120,
        every=2,
    )


def _chart_objects(s: System) -> set[tuple[str, str, str]]:
    """Every object labelled as the release's, namespaced (both namespaces) or cluster-wide."""
    sel = f"app.kubernetes.io/instance={RELEASE}"
    kinds = "deployments,services,serviceaccounts,roles,rolebindings,configmaps,secrets"
    found = set()
    for ns in (OPERATOR_NS, NAMESPACE):
        for item in get(s.west, "-n", ns, "get", kinds, "-l", sel)["items"]:
            found.add((item["kind"], ns, item["metadata"]["name"]))
    for item in get(s.west, "get", "clusterroles,clusterrolebindings", "-l", sel)["items"]:
        found.add((item["kind"], "", item["metadata"]["name"]))
    return found


def test_helm_upgrade_and_uninstall_leave_no_orphans(system: System) -> None:
    s, k = system, system.kind
    before = _chart_objects(s)
    assert ("Deployment", OPERATOR_NS, RELEASE) in before
    assert ("Deployment", NAMESPACE, f"{RELEASE}-router") in before
    values = k.out / "kind-helm-values.yaml"
    helm(
        k,
        "upgrade",
        RELEASE,
        str(HACK.parent / "charts" / "prfaas-operator"),
        "-n",
        OPERATOR_NS,
        "-f",
        str(values),
        "--set",
        "operator.verbose=true",
        "--wait",
        "--timeout=180s",
        timeout=240,
    )
    assert _chart_objects(s) == before
    dep = get(s.west, "-n", OPERATOR_NS, "get", "deployment", RELEASE)
    assert "--verbose" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    wait_rollouts(s, 180)
    helm(k, "uninstall", RELEASE, "-n", OPERATOR_NS, "--wait", "--timeout=180s", timeout=240)
    assert _chart_objects(s) == set()
    # CRDs and the custom resources stay (documented: Helm never deletes crds/)
    for crd in (PDCluster.resource.name, PrefillPool.resource.name):
        kubectl(s.west, "get", "crd", crd)
    kubectl(s.west, "-n", NAMESPACE, "get", f"{PDCluster.resource.plural}/h20-pd")
