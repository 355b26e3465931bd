"""The PrfaaS system on the two kind clusters (``prfaas_dev.kind``), from the project image.

dc-west (PD cluster): the Helm chart (operator under its ServiceAccount and the chart's RBAC,
the router as the chart runs it), the H20 engines as Deployments ``h20-prefill`` and
``h20-decode`` behind Services, and ``dc-east-link``: the shaped ``prfaas link`` whose gateway
the decode engines pull the PrefillPool's KVCache through. dc-east (PrefillPool): the H200
engines as Deployment ``h200-prefill`` behind a Service, and a ServiceAccount whose
token is the operator's member kubeconfig (a Secret in dc-west): ``/scale`` of Deployments and
listing pods, in one namespace, nothing else.

Engine pods request one ``nvidia.com/gpu`` and select their node group by accelerator, so the
scheduler places them; the operator's ``/scale`` writes create and delete real pods. The
case study runs time-scaled (``speedup``), as ``prfaas demo`` runs it.

Every group names its engines by Service: the router follows the ready pods of dc-west's groups
from their EndpointSlices, and the pool's pods in dc-east as the operator resolves them there and
publishes them in the PDCluster's status (the router needs no credentials for dc-east). Pod
addresses are routed between the two clusters over the Docker network.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prfaas.api import PDCluster, PrefillPool
from prfaas_dev.binaries import find_binaries
from prfaas_dev.demo.scenario import NAMESPACE, time_scaled
from prfaas_dev.kind import ACCELERATOR, EAST, GPU, REPO, WEST, Kind, KindError, kubectl_retry
from prfaas_dev.kubectl import kubectl

RELEASE = "prfaas-operator"
OPERATOR_NS = "prfaas-system"
MEMBER_SECRET = "dc-east"
MEMBER_SA = "prfaas-operator-member"
LINK = "dc-east-link"
ENGINE_PORT, KV_PORT, GATEWAY_PORT, LINK_ADMIN_PORT = 8000, 9000, 9400, 9900
GROUP_LABEL = "prfaas.io/engine-group"
MODEL = "sim-model"
CHART = REPO / "charts" / "prfaas-operator"


@dataclass
class Options:
    image: str
    speedup: float = 10.0
    kv_byte_scale: float = 2e-4
    emit_interval: float = 0.2
    link_gbps: float = 100.0
    link_rtt_ms: float = 20.0
    # the Deployments before the operator acts (it moves them to its plan)
    initial: dict[str, int] = field(
        default_factory=lambda: {"h200-prefill": 2, "h20-prefill": 4, "h20-decode": 4}
    )
    pool_max: int = 4  # the dc-east node group's GPUs
    max_step: int = 2


@dataclass
class System:
    """What :func:`deploy` set up, and how to reach it from this machine."""

    kind: Kind
    opts: Options
    west: Path  # admin kubeconfigs
    east: Path
    router_url: str  # the router's NodePort on dc-west's control-plane node

    def engines(self, cluster: Path, group: str) -> list[dict[str, Any]]:
        """The pods of one engine group (Deployment)."""
        raw = kubectl_retry(
            cluster, "-n", NAMESPACE, "get", "pods", "-l", f"{GROUP_LABEL}={group}", "-o", "json"
        )
        items: list[dict[str, Any]] = json.loads(raw)["items"]
        return items

    def proxy(self, cluster: Path, pod: str, port: int, path: str) -> str:
        """GET a pod's HTTP endpoint through the API server's proxy (no route to pods needed)."""
        url = f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}:{port}/proxy{path}"
        return kubectl_retry(cluster, "get", "--raw", url)

    def link_admin(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The link's admin API (GET, or POST ``body``), through the API server's proxy."""
        pod = self.engines(self.west, LINK)[0]["metadata"]["name"]
        url = f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}:{LINK_ADMIN_PORT}/proxy/link"
        if body is None:
            out = kubectl_retry(self.west, "get", "--raw", url)
        else:  # setting a capacity or state: the same again is the same
            out = kubectl_retry(
                self.west, "create", "--raw", url, "-f", "-", stdin=json.dumps(body)
            )
        result: dict[str, Any] = json.loads(out)
        return result

    def pdcluster(self) -> dict[str, Any]:
        raw = kubectl_retry(
            self.west, "-n", NAMESPACE, "get", f"{PDCluster.resource.plural}/h20-pd", "-o", "json"
        )
        obj: dict[str, Any] = json.loads(raw)
        return obj


# -- manifests -------------------------------------------------------------------------------
def _security() -> tuple[dict[str, Any], dict[str, Any]]:
    pod = {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    return pod, container


def _pod_ip_env() -> list[dict[str, Any]]:
    return [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]


def _deployment(
    name: str,
    replicas: int,
    container: dict[str, Any],
    *,
    gpu_group: str | None = None,
) -> dict[str, Any]:
    pod_sec, c_sec = _security()
    labels = {
        "app.kubernetes.io/name": "prfaas-engine" if gpu_group else name,
        "app.kubernetes.io/part-of": "prfaas",
        GROUP_LABEL: name,
    }
    spec: dict[str, Any] = {
        "securityContext": pod_sec,
        "terminationGracePeriodSeconds": 5,
        "containers": [
            {
                **container,
                "securityContext": c_sec,
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    if gpu_group:
        spec["nodeSelector"] = {ACCELERATOR: gpu_group}
        spec["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {GROUP_LABEL: name}},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def engine(
    o: Options,
    name: str,
    role: str,
    profile: str,
    accelerator: str,
    kv_via: str | None = None,
    kv_peers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """An engine group: ``prfaas engine`` pods, one GPU each, on the accelerator's nodes."""
    # (no value below contains a space)
    args = (
        f"engine --role {role} --profile {profile} --model {MODEL} --host 0.0.0.0 "
        f"--port {ENGINE_PORT} --kv-port {KV_PORT} --kv-advertise $(POD_IP):{KV_PORT} "
        f"--speedup {o.speedup:g} --kv-byte-scale {o.kv_byte_scale:g} "
        f"--emit-interval {o.emit_interval:g}"
    ).split()
    if kv_via:
        args += ["--kv-via", kv_via]
    for peer in kv_peers:  # where decode may pull a KVCache from (the engine refuses the rest)
        args += ["--kv-peer", peer]
    container = {
        "name": "engine",
        "image": o.image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "env": _pod_ip_env(),
        "ports": [
            {"name": "http", "containerPort": ENGINE_PORT},
            {"name": "kv", "containerPort": KV_PORT},
        ],
        "resources": {"requests": {"cpu": "20m", "memory": "96Mi"}, "limits": {GPU: 1}},
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
        },
    }
    return _deployment(name, o.initial[name], container, gpu_group=accelerator)


def link(o: Options) -> dict[str, Any]:
    """The shaped inter-datacenter link, on dc-west's side: a gateway to dc-east's pods only."""
    # the admin API on the pod's address: the tests and the demo reach it through the API
    # server's pod proxy (it can cut the link; nothing else in the cluster is told where it is)
    args = (
        f"link --host 0.0.0.0 --gateway-port {GATEWAY_PORT} --allow {EAST.pod_subnet} "
        f"--admin-host 0.0.0.0 --admin-port {LINK_ADMIN_PORT} --gbps {o.link_gbps:g} "
        f"--rtt-ms {o.link_rtt_ms:g} --speedup {o.speedup:g} "
        f"--kv-byte-scale {o.kv_byte_scale:g} --name dc-east-west"
    ).split()
    container = {
        "name": "link",
        "image": o.image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "ports": [
            {"name": "gateway", "containerPort": GATEWAY_PORT},
            {"name": "admin", "containerPort": LINK_ADMIN_PORT},
        ],
        "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}},
        "readinessProbe": {"httpGet": {"path": "/health", "port": "admin"}, "periodSeconds": 2},
    }
    return _deployment(LINK, 1, container)


def service(name: str, ports: dict[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "type": "ClusterIP",
            "selector": {GROUP_LABEL: name},
            "ports": [{"name": n, "port": p, "targetPort": n} for n, p in ports.items()],
        },
    }


def member_rbac() -> list[dict[str, Any]]:
    """What the operator may do in dc-east, here only: /scale of Deployments, list pods (to see
    Pending ones), and read EndpointSlices (to publish the pool's ready engines to the router)."""
    meta = {"name": MEMBER_SA, "namespace": NAMESPACE}
    rules = [
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["list", "watch"],
        },
    ]
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": MEMBER_SA}
    subject = {"kind": "ServiceAccount", "name": MEMBER_SA, "namespace": NAMESPACE}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": ref,
            "subjects": [subject],
        },
    ]


def resources(o: Options) -> tuple[dict[str, Any], dict[str, Any]]:
    """The case study's PDCluster and PrefillPool, time-scaled, for these Deployments. Every
    group names its engines by Service, as the samples do: the router follows the ready pods
    of dc-west's groups itself, and the pool's pods in dc-east as the operator publishes them
    (reached over the routes between the clusters' pod CIDRs)."""
    pd, pool = time_scaled(o.speedup)
    pd["spec"]["policy"].update(maxStep=o.max_step, planPoolSize=True)
    p = pool["spec"]
    p["endpoints"] = {"service": "h200-prefill"}
    p["replicas"] = {"min": 1, "max": o.pool_max}
    p["placement"] = {"kubeconfigSecretRef": {"name": MEMBER_SECRET, "key": "kubeconfig"}}
    return pd, pool


def helm_values(o: Options) -> dict[str, Any]:
    repository, _, tag = o.image.rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "operator": {"logFormat": "plain", "watchNamespaces": [NAMESPACE]},
        "memberSecrets": [{"namespace": NAMESPACE, "name": MEMBER_SECRET}],
        "router": {
            "namespace": NAMESPACE,
            "pdCluster": "h20-pd",
            "model": MODEL,
            "service": {"type": "NodePort"},
        },
    }


# -- steps -----------------------------------------------------------------------------------
def _apply(kubeconfig: Path, *objs: dict[str, Any]) -> None:
    text = yaml.safe_dump_all(objs)
    kubectl_retry(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=text)


def helm(kind: Kind, *args: str, timeout: float = 300, attempts: int = 1) -> str:
    """The helm that ``make k8s-bin`` built, against dc-west; ``attempts`` > 1 only for calls
    that are safe to repeat (list, upgrade)."""
    bin_dir = find_binaries()["kubectl"].parent
    for k in range(attempts):
        proc = subprocess.run(
            [str(bin_dir / "helm"), "--kubeconfig", str(kind.kubeconfig(WEST.name)), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode == 0:
            return proc.stdout
        if k < attempts - 1:
            time.sleep(3 + 3 * k)
    raise KindError(f"helm {' '.join(args[:2])}: {proc.stderr.strip()}")


def released(kind: Kind) -> bool:
    return RELEASE in helm(kind, "list", "-n", OPERATOR_NS, "-q", attempts=8).split()


def member_kubeconfig(kind: Kind) -> str:
    """A kubeconfig for dc-east with the member ServiceAccount's token (no admin rights)."""
    east = kind.kubeconfig(EAST.name)
    token = kubectl_retry(
        east, "-n", NAMESPACE, "create", "token", MEMBER_SA, "--duration=48h"
    ).strip()
    doc = yaml.safe_load(kind.internal_kubeconfig(EAST.name))
    doc["users"] = [{"name": MEMBER_SA, "user": {"token": token}}]
    for ctx in doc["contexts"]:
        ctx["context"]["user"] = MEMBER_SA
    return str(yaml.safe_dump(doc))


def node_port(kubeconfig: Path, name: str, namespace: str = NAMESPACE) -> int:
    raw = kubectl_retry(kubeconfig, "-n", namespace, "get", "service", name, "-o", "json")
    return int(json.loads(raw)["spec"]["ports"][0]["nodePort"])


def install_chart(kind: Kind, o: Options) -> None:
    """helm install, or upgrade when the release exists (also after an install that timed out
    half-way on a slow API server)."""
    values = kind.out / "kind-helm-values.yaml"
    values.write_text(yaml.safe_dump(helm_values(o)))
    common = [RELEASE, str(CHART), "-n", OPERATOR_NS, "-f", str(values)]
    if not released(kind):
        try:
            helm(kind, "install", "--create-namespace", *common)
            return
        except KindError:
            if not released(kind):
                raise
    helm(kind, "upgrade", *common, attempts=6)


def deploy(kind: Kind, o: Options, say: Callable[[str], None] | None = None) -> System:
    """Everything above, idempotently, on clusters that ``kind.up()`` brought up."""
    say = say or kind.say
    west, east = kind.kubeconfig(WEST.name), kind.kubeconfig(EAST.name)
    kind.load(o.image)
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    say(f"dc-east: {NAMESPACE}, the member ServiceAccount, h200-prefill engines")
    _apply(east, ns, *member_rbac())
    link_name = f"{LINK}.{NAMESPACE}.svc.cluster.local"
    via = f"{link_name}:{GATEWAY_PORT}"
    _apply(
        east,
        engine(o, "h200-prefill", "prefill", "h200", "NVIDIA-H200", kv_via=via),
        service("h200-prefill", {"http": ENGINE_PORT}),
    )
    say("dc-west: the member kubeconfig Secret, h20 engines, the link")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": MEMBER_SECRET, "namespace": NAMESPACE},
        "data": {"kubeconfig": base64.b64encode(member_kubeconfig(kind).encode()).decode()},
    }
    _apply(west, ns, secret)
    _apply(
        west,
        engine(o, "h20-prefill", "prefill", "h20", "NVIDIA-H20"),
        # decode pulls from local PD-P pods and, for the pool, through the link only
        engine(
            o, "h20-decode", "decode", "h20", "NVIDIA-H20", kv_peers=(WEST.pod_subnet, link_name)
        ),
        link(o),
        service("h20-prefill", {"http": ENGINE_PORT}),
        service("h20-decode", {"http": ENGINE_PORT}),
        service(LINK, {"gateway": GATEWAY_PORT, "admin": LINK_ADMIN_PORT}),
    )
    say(f"dc-west: the Helm chart, release {RELEASE} ({o.image})")
    install_chart(kind, o)
    pd, pool = resources(o)
    say("dc-west: the case study's PrefillPool and PDCluster (time-scaled)")
    _apply(west, pool, pd)
    router = f"http://{kind.node_ip(f'{WEST.name}-control-plane')}:" + str(
        node_port(west, f"{RELEASE}-router")
    )
    return System(kind, o, west, east, router)


def wait_rollouts(system: System, timeout: float = 300) -> None:
    """Operator, router, link and every engine group rolled out (their pods Ready)."""
    for kc, ns, names in (
        (system.west, OPERATOR_NS, [RELEASE]),
        (system.west, NAMESPACE, [f"{RELEASE}-router", LINK, "h20-prefill", "h20-decode"]),
        (system.east, NAMESPACE, ["h200-prefill"]),
    ):
        for name in names:  # waiting again after a dropped connection is the same wait
            kubectl_retry(kc, "-n", ns, "rollout", "status", f"deployment/{name}",
                          f"--timeout={timeout:.0f}s", attempts=3, timeout=timeout + 30,
                          request_timeout=None)  # fmt: skip


def undeploy(kind: Kind) -> None:
    """Remove the system (not the clusters, not the CRDs): the CRs first, while the operator
    still runs (its finalizer cleans up after them; without an operator it is removed here)."""
    west, east = kind.kubeconfig(WEST.name), kind.kubeconfig(EAST.name)
    for plural in (PDCluster.resource.plural, PrefillPool.resource.plural):
        done = kubectl(
            west,
            "-n",
            NAMESPACE,
            "delete",
            plural,
            "--all",
            "--wait=true",
            "--timeout=30s",
            check=False,
            timeout=60,
        )
        if done.returncode != 0:  # no operator to finalize them
            names = kubectl(west, "-n", NAMESPACE, "get", plural, "-o", "name", check=False)
            for name in names.stdout.split():
                kubectl(
                    west,
                    "-n",
                    NAMESPACE,
                    "patch",
                    name,
                    "--type=merge",
                    "-p",
                    '{"metadata":{"finalizers":null}}',
                    check=False,
                )
    if released(kind):
        helm(kind, "uninstall", RELEASE, "-n", OPERATOR_NS, "--wait", "--timeout=120s")
    for kc in (west, east):
        kubectl(
            kc,
            "delete",
            "namespace",
            NAMESPACE,
            "--wait=true",
            "--timeout=120s",
            check=False,
            timeout=150,
        )


def wait_for(what: str, cond: Callable[[], bool], timeout: float, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise KindError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
