"""Two kind clusters on one Docker network: ``dc-west`` (the PD cluster: operator, router, H20
engines) and ``dc-east`` (the PrefillPool: H200 engines), made by the real ``kind`` CLI from a
node image built on this machine (``hack/kind/images.sh``), in the project's own Docker engine
(``hack/kind/docker.sh``).

Each cluster has a GPU node group (by default its one node, see ``NodeGroup.nodes``): nodes
labelled with their datacenter (``topology.kubernetes.io/region``), accelerator
(``nvidia.com/gpu.product``) and group (``prfaas.io/node-group``) that advertise
``nvidia.com/gpu`` as an extended resource, so the real scheduler places engine pods that
request GPUs on the right group and leaves them Pending when the group is full.

Networking is what kind's kindnetd would do, done from here (kindnetd's image cannot be had):
each node gets a CNI config for Debian's ``ptp``/``host-local`` plugins with its pod CIDR, and a
route to every other node's pod CIDR, in both clusters, over the Docker network. The two
clusters have distinct pod and Service subnets, so a dc-west pod reaches dc-east pods directly,
as across a routed WAN; cross-datacenter traffic crosses the Docker network and nothing else.

    python -m prfaas_dev.kind up|down|status|load IMAGE   (make kind / make kind-down)
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from prfaas_dev.kubectl import KubeError, kubectl

REPO = Path(__file__).resolve().parents[2]
HACK = REPO / "hack"
NETWORK = "prfaas-kind"
# The project's network: the first of these that no route on this machine overlaps.
SUBNETS = ("172.30.60.0/24", "172.31.60.0/24", "10.210.60.0/24", "192.168.248.0/24")

REGION = "topology.kubernetes.io/region"
ACCELERATOR = "nvidia.com/gpu.product"
NODE_GROUP = "prfaas.io/node-group"
GPU = "nvidia.com/gpu"
CLUSTER_LABEL = "io.x-k8s.kind.cluster"  # what kind labels its node containers with


class KindError(RuntimeError):
    """A step of bringing the clusters up or down failed; the message says which and why."""


@dataclass(frozen=True)
class NodeGroup:
    name: str  # h20, h200
    accelerator: str  # the nvidia.com/gpu.product label value
    gpus: int  # nvidia.com/gpu each node advertises
    # 0: the control-plane node is the group (a one-node cluster: what the tests run, for the
    # CPU of a 2-core machine); n: n worker nodes, tainted so that only GPU pods land there
    nodes: int = 0


@dataclass(frozen=True)
class ClusterSpec:
    name: str  # also its datacenter label
    pod_subnet: str
    service_subnet: str
    groups: tuple[NodeGroup, ...]


WEST = ClusterSpec("dc-west", "10.244.0.0/16", "10.96.0.0/16", (NodeGroup("h20", "NVIDIA-H20", 8),))
EAST = ClusterSpec(
    "dc-east", "10.245.0.0/16", "10.97.0.0/16", (NodeGroup("h200", "NVIDIA-H200", 4),)
)
CLUSTERS = (WEST, EAST)


@dataclass(frozen=True)
class Node:
    name: str  # the node's and its container's name
    cluster: str
    ip: str  # on the project's Docker network
    pod_cidr: str


def kind_config(spec: ClusterSpec) -> dict[str, Any]:
    """The kind cluster config: our CNI (none from kind), iptables kube-proxy, labels."""
    control: dict[str, Any] = {"role": "control-plane", "labels": {REGION: spec.name}}
    nodes: list[dict[str, Any]] = [control]
    for g in spec.groups:
        labels = {REGION: spec.name, ACCELERATOR: g.accelerator, NODE_GROUP: g.name}
        if g.nodes == 0:
            control["labels"].update(labels)
        nodes += [{"role": "worker", "labels": labels} for _ in range(g.nodes)]
    return {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "networking": {
            "disableDefaultCNI": True,
            "kubeProxyMode": "iptables",
            "ipFamily": "ipv4",
            "podSubnet": spec.pod_subnet,
            "serviceSubnet": spec.service_subnet,
        },
        # kubelet refuses cgroup v1 hosts unless told otherwise (these machines are v1)
        "kubeadmConfigPatches": ["kind: KubeletConfiguration\nfailCgroupV1: false\n"],
        "nodes": nodes,
    }


def cni_config(pod_cidr: str) -> dict[str, Any]:
    """Debian's CNI plugins, as kindnetd configures them: point-to-point veths, no masquerade
    (every node routes every pod CIDR), host-local addresses from the node's pod CIDR."""
    ipam = {
        "type": "host-local",
        "dataDir": "/run/cni-ipam-state",
        "routes": [{"dst": "0.0.0.0/0"}],
        "ranges": [[{"subnet": pod_cidr}]],
    }
    return {
        "cniVersion": "0.4.0",
        "name": "prfaas",
        "plugins": [
            {"type": "ptp", "ipMasq": False, "mtu": 1500, "ipam": ipam},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubectl_retry(
    kubeconfig: Path,
    *args: str,
    stdin: str | None = None,
    attempts: int = 8,
    timeout: float = 120,
    request_timeout: str | None = "60s",
) -> str:
    """kubectl for an idempotent call, tried again when the API server is slow to answer
    (TLS handshake timeouts and the like on a loaded machine); returns its stdout."""
    extra = [f"--request-timeout={request_timeout}"] if request_timeout else []
    for k in range(attempts):
        try:
            return kubectl(kubeconfig, *args, *extra, stdin=stdin, timeout=timeout).stdout
        except (KubeError, subprocess.TimeoutExpired):
            if k == attempts - 1:
                raise
            time.sleep(2 + 3 * k)
    raise AssertionError("unreachable")


def _say(msg: str) -> None:
    print(f"==> {msg}", file=sys.stderr, flush=True)


def _run(argv: Sequence[str], *, timeout: float = 600, stdin: str | None = None) -> str:
    proc = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise KindError(f"{' '.join(argv[:3])} ...: " + "\n".join(detail))
    return proc.stdout


def _hack(script: str, *args: str, timeout: float = 7200) -> str:
    """A hack/ script; its progress (stderr) goes to our stderr, its answer is the last line."""
    proc = subprocess.run(
        [str(HACK / script), *args],
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise KindError(f"hack/{script} {' '.join(args)} failed (exit {proc.returncode})")
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""


class Kind:
    """The clusters, their kubeconfigs under ``out`` and the Docker engine they run in."""

    def __init__(
        self,
        out: Path = REPO / ".local",
        specs: Sequence[ClusterSpec] = CLUSTERS,
        say: Callable[[str], None] = _say,
    ) -> None:
        self.out = out
        self.specs = {s.name: s for s in specs}
        self.say = say
        self._kind: Path | None = None
        self.env = dict(os.environ, DOCKER_HOST=_hack("kind/docker.sh", "host"))
        self.env["KIND_EXPERIMENTAL_DOCKER_NETWORK"] = NETWORK

    # -- tools -------------------------------------------------------------------------------
    @property
    def kind_bin(self) -> Path:
        if self._kind is None:
            self._kind = Path(_hack("build-k8s.sh", "--node", "--print-dir")) / "kind"
        if not self._kind.exists():
            self._kind = Path(_hack("build-k8s.sh", "--node")) / "kind"
        return self._kind

    def docker(self, *args: str, timeout: float = 300, stdin: str | None = None) -> str:
        proc = subprocess.run(
            ["docker", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )
        if proc.returncode != 0:
            raise KindError(f"docker {' '.join(args[:2])}: {proc.stderr.strip()}")
        return proc.stdout

    def kind(self, *args: str, timeout: float = 600, quiet: bool = False) -> str:
        proc = subprocess.run(
            [str(self.kind_bin), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if quiet else None,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )
        if proc.returncode != 0:
            raise KindError(f"kind {' '.join(args[:3])} failed (exit {proc.returncode})")
        return proc.stdout

    def kubeconfig(self, cluster: str) -> Path:
        return self.out / f"kind-{cluster}.kubeconfig"

    def internal_kubeconfig(self, cluster: str) -> str:
        """A kubeconfig that works from the other cluster's pods: the API server's address on
        the Docker network (an IP: no name lookup through the other cluster's DNS)."""
        text = self.kind("get", "kubeconfig", "--internal", "--name", cluster, quiet=True)
        doc = yaml.safe_load(text)
        ip = self.node_ip(f"{cluster}-control-plane")
        for c in doc.get("clusters", []):
            c["cluster"]["server"] = f"https://{ip}:6443"
        return str(yaml.safe_dump(doc))

    # -- state -------------------------------------------------------------------------------
    def docker_running(self) -> bool:
        return (
            subprocess.run(
                [str(HACK / "kind" / "docker.sh"), "status"], env=self.env, check=False
            ).returncode
            == 0
        )

    def existing(self) -> list[str]:
        if not self.docker_running():
            return []
        return [c for c in self.kind("get", "clusters", quiet=True).split() if c in self.specs]

    def node_names(self, cluster: str) -> list[str]:
        out = self.docker(
            "ps", "-a", "--filter", f"label={CLUSTER_LABEL}={cluster}", "--format", "{{.Names}}"
        )
        return sorted(out.split())

    def node_ip(self, name: str) -> str:
        fmt = f'{{{{(index .NetworkSettings.Networks "{NETWORK}").IPAddress}}}}'
        return self.docker("inspect", "-f", fmt, name).strip()

    def nodes(self) -> list[Node]:
        found = []
        for cluster in self.existing():
            raw = kubectl_retry(self.kubeconfig(cluster), "get", "nodes", "-o", "json")
            for item in json.loads(raw)["items"]:
                name = item["metadata"]["name"]
                cidr = item["spec"].get("podCIDR")
                if not cidr:
                    raise KindError(f"node {name} has no pod CIDR yet")
                found.append(Node(name, cluster, self.node_ip(name), cidr))
        return found

    # -- up ----------------------------------------------------------------------------------
    def up(self) -> None:
        t0 = time.monotonic()
        self.docker_start()
        self.network()
        have = self.existing()
        image = None if all(name in have for name in self.specs) else self.node_image()
        for spec in self.specs.values():
            if spec.name in have:
                self.say(f"{spec.name}: exists")
                kubectl_config = self.kind("get", "kubeconfig", "--name", spec.name, quiet=True)
                self._write_kubeconfig(spec.name, kubectl_config)
                continue
            assert image is not None
            self.create(spec, image)
        for spec in self.specs.values():
            self.steady_control_plane(spec.name)
        self.wire()
        for spec in self.specs.values():
            self.gpus(spec)
        self.wait_ready()
        self.say(
            f"clusters {', '.join(self.specs)} ready in {time.monotonic() - t0:.0f} s; "
            f"kubeconfigs: {', '.join(str(self.kubeconfig(c)) for c in self.specs)}"
        )

    def docker_start(self) -> None:
        _hack("kind/docker.sh", "start")

    def node_image(self) -> str:
        return _hack("kind/images.sh", "node")

    def network(self) -> None:
        names = self.docker("network", "ls", "--format", "{{.Name}}").split()
        if NETWORK in names:
            return
        subnet = _free_subnet()
        self.say(f"creating the Docker network {NETWORK} ({subnet})")
        self.docker("network", "create", "--driver", "bridge", "--subnet", subnet, NETWORK)

    def create(self, spec: ClusterSpec, image: str, attempts: int = 2) -> None:
        """``kind create cluster``; tried once more when kubeadm gives up (on a loaded machine
        the control plane can miss kubeadm's deadline; kind deletes the half-made cluster)."""
        self.out.mkdir(parents=True, exist_ok=True)
        config = self.out / f"kind-{spec.name}.yaml"
        config.write_text(yaml.safe_dump(kind_config(spec), sort_keys=False))
        for k in range(attempts):
            self.say(f"{spec.name}: kind create cluster (~1-2 min)")
            try:
                self.kind(
                    "create", "cluster", "--name", spec.name, "--image", image,
                    "--config", str(config), "--kubeconfig", str(self.kubeconfig(spec.name)),
                    "--wait", "0s",
                )  # fmt: skip
                return
            except KindError:
                if k == attempts - 1:
                    raise
                self.say(f"{spec.name}: kind create cluster failed; trying once more")
                self.kind("delete", "cluster", "--name", spec.name, quiet=True)

    def _write_kubeconfig(self, cluster: str, text: str) -> None:
        path = self.kubeconfig(cluster)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o600)

    def steady_control_plane(self, cluster: str) -> None:
        """A control plane that rides out a loaded 2-core machine: lenient probes for its
        static pods (kubeadm's 8 failures of a 15 s probe restart a slow etcd, then the API
        server that lost it) and no leader election for the one controller manager and
        scheduler (a lease renewal slower than 5 s makes them exit, then back off for
        minutes). Idempotent: unchanged manifests stay as they are."""
        script = (
            "for f in /etc/kubernetes/manifests/*.yaml; do "
            "sed -E -e 's/failureThreshold: [0-9]+/failureThreshold: 60/' "
            "-e 's/timeoutSeconds: [0-9]+/timeoutSeconds: 60/' "
            "-e 's/periodSeconds: 1$/periodSeconds: 5/' "
            "-e 's/--leader-elect=true/--leader-elect=false/' "
            '"$f" > /etc/kubernetes/manifest.tmp; '
            'cmp -s /etc/kubernetes/manifest.tmp "$f" || mv /etc/kubernetes/manifest.tmp "$f"; '
            "done; rm -f /etc/kubernetes/manifest.tmp"
        )
        self.docker("exec", f"{cluster}-control-plane", "sh", "-c", script)

    def wire(self) -> None:
        """CNI config on each node, and routes from each node to every other node's pods."""
        self.say("networking: CNI config and pod routes on every node (both clusters)")
        deadline = time.monotonic() + 120
        while True:
            try:
                nodes = self.nodes()
                break
            except (KindError, KubeError):  # pod CIDRs come from the controller-manager
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        for n in nodes:
            conf = json.dumps(cni_config(n.pod_cidr), indent=2)
            self.docker(
                "exec",
                "-i",
                n.name,
                "sh",
                "-c",
                "cat > /etc/cni/net.d/10-prfaas.conflist",
                stdin=conf,
            )
            routes = [
                f"ip route replace {m.pod_cidr} via {m.ip}" for m in nodes if m.name != n.name
            ]
            if routes:
                self.docker("exec", n.name, "sh", "-ec", "; ".join(routes))

    def gpus(self, spec: ClusterSpec) -> None:
        """Advertise ``nvidia.com/gpu`` on each GPU node (the documented way for an extended
        resource no device plugin manages: a patch of the node's status). GPU worker nodes are
        tainted as GPU node pools are, so only pods that tolerate GPUs land there, and the
        control-plane node takes the rest (operator, router, link)."""
        kc = self.kubeconfig(spec.name)
        for g in spec.groups:
            raw = kubectl_retry(kc, "get", "nodes", "-l", f"{NODE_GROUP}={g.name}", "-o", "name")
            for node in raw.split():
                patch = json.dumps({"status": {"capacity": {GPU: str(g.gpus)}}})
                kubectl_retry(
                    kc, "patch", node, "--subresource=status", "--type=merge", "-p", patch
                )
                if g.nodes:
                    taint = f"{GPU}=present:NoSchedule"
                    kubectl_retry(kc, "taint", "nodes", node.split("/")[-1], taint, "--overwrite")
        if any(g.nodes for g in spec.groups):
            cp = f"{spec.name}-control-plane"
            taint = "node-role.kubernetes.io/control-plane:NoSchedule-"
            kubectl(kc, "taint", "nodes", cp, taint, check=False)

    def wait_ready(self, timeout: float = 300) -> None:
        for name in self.specs:
            kc = self.kubeconfig(name)
            self.say(f"{name}: waiting for nodes and CoreDNS")
            for what in (
                ["wait", "--for=condition=Ready", "nodes", "--all"],
                ["-n", "kube-system", "rollout", "status", "deployment/coredns"],
            ):
                kubectl_retry(kc, *what, f"--timeout={timeout:.0f}s", attempts=3,
                              timeout=timeout + 30, request_timeout=None)  # fmt: skip

    # -- images ------------------------------------------------------------------------------
    def load(self, image: str, clusters: Sequence[str] | None = None) -> None:
        """``kind load docker-image`` into every node of the clusters."""
        for name in clusters or list(self.specs):
            self.say(f"{name}: kind load docker-image {image}")
            self.kind("load", "docker-image", image, "--name", name, quiet=True)

    # -- faults ------------------------------------------------------------------------------
    def disconnect(self, cluster: str) -> dict[str, str]:
        """Take a cluster's nodes off the Docker network; returns their addresses for
        :meth:`reconnect`."""
        ips = {n: self.node_ip(n) for n in self.node_names(cluster)}
        for name in ips:
            self.docker("network", "disconnect", NETWORK, name)
        return ips

    def reconnect(self, ips: dict[str, str]) -> None:
        """Back on the network at the same addresses (certificates and kubelets name them),
        and the routes that went with the interface restored."""
        for name, ip in ips.items():
            self.docker("network", "connect", "--ip", ip, NETWORK, name)
        self.wire()

    # -- down --------------------------------------------------------------------------------
    def down(self) -> None:
        if not self.docker_running():
            self.say("no clusters: the project's Docker engine is not running")
            return
        for name in self.existing():
            self.say(f"{name}: kind delete cluster")
            self.kind("delete", "cluster", "--name", name, quiet=True)
        for name in self.specs:
            self.kubeconfig(name).unlink(missing_ok=True)
        names = self.docker("network", "ls", "--format", "{{.Name}}").split()
        if NETWORK in names:
            self.docker("network", "rm", NETWORK)


def _free_subnet() -> str:
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=False)
    used = []
    for line in routes.stdout.splitlines():
        word = line.split()[0] if line.split() else ""
        if "/" in word:
            used.append(ipaddress.ip_network(word, strict=False))
    for cand in SUBNETS:
        net = ipaddress.ip_network(cand)
        if not any(net.overlaps(u) for u in used):
            return cand
    raise KindError(f"every candidate subnet for {NETWORK} is in use: {', '.join(SUBNETS)}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m prfaas_dev.kind",
        description="The two kind clusters of the live system (dc-west, dc-east).",
    )
    p.add_argument("command", choices=("up", "down", "status", "load"))
    p.add_argument("image", nargs="?", help="for load: a local image of the project's Docker")
    p.add_argument("--out", type=Path, default=REPO / ".local", help="kubeconfigs go here")
    p.add_argument("--stop-docker", action="store_true", help="down: also stop Docker")
    args = p.parse_args(argv)
    k = Kind(args.out)
    try:
        if args.command == "up":
            k.up()
        elif args.command == "down":
            k.down()
            if args.stop_docker:
                _hack("kind/docker.sh", "stop")
        elif args.command == "status":
            have = k.existing()
            for name in k.specs:
                print(f"{name}: {'running' if name in have else 'absent'}")
            return 0 if len(have) == len(k.specs) else 1
        else:
            if not args.image:
                p.error("load needs an image")
            k.load(args.image)
    except KindError as exc:
        print(f"kind: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
