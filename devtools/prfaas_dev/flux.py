"""Flux (source-controller + kustomize-controller) as local processes against a control plane.

``hack/build-flux.sh`` (``make flux-bin``) builds both controllers from Go modules once per
version into a cache directory, next to their CRDs and Flux's RBAC for them (what ``flux install``
would apply). :class:`Flux` applies those to a :class:`~prfaas_dev.cluster.ControlPlane` and runs
each controller as a child process with a kubeconfig for its ServiceAccount's identity, since the
test API server has no kubelet to run their Deployments:

    with Flux(plane, state_dir) as flux:        # CRDs, namespace flux-system, RBAC, processes
        kubectl(plane.kubeconfig, "apply", "-f", "gitrepository.yaml")

source-controller serves the artifacts it builds (tarballs of a Git revision) over HTTP on a
loopback port it advertises in each GitRepository's status; kustomize-controller fetches them
from there, builds the kustomization and applies it with server-side apply.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from prfaas_dev.binaries import DevClusterError, cache_root
from prfaas_dev.cluster import ControlPlane
from prfaas_dev.kubectl import kubectl
from prfaas_dev.ports import free_port
from prfaas_dev.procs import Proc, ProcessError

# Keep in step with hack/build-flux.sh (tests/integration checks that both name the same dir).
FLUX_VERSION = "2.9.5"
SOURCE_CONTROLLER_VERSION = "1.9.6"
KUSTOMIZE_CONTROLLER_VERSION = "1.9.6"
CONTROLLERS = ("source-controller", "kustomize-controller")
NAMESPACE = "flux-system"

__all__ = [
    "CONTROLLERS",
    "FLUX_VERSION",
    "NAMESPACE",
    "Flux",
    "FluxDist",
    "FluxMissingError",
    "default_flux_dir",
    "find_flux",
]


class FluxMissingError(DevClusterError):
    """The Flux controllers (or their CRDs/RBAC) are not where they were looked for."""


def default_flux_dir() -> Path:
    """Where ``hack/build-flux.sh`` puts them (``hack/build-flux.sh --print-dir``)."""
    key = (
        f"flux-v{FLUX_VERSION}-source-v{SOURCE_CONTROLLER_VERSION}"
        f"-kustomize-v{KUSTOMIZE_CONTROLLER_VERSION}"
    )
    return cache_root() / key


@dataclass(frozen=True)
class FluxDist:
    """A built Flux: ``bin/<controller>``, ``crds/*.yaml``, ``rbac/*.yaml``."""

    root: Path

    def binary(self, controller: str) -> Path:
        return self.root / "bin" / controller

    @property
    def crds(self) -> list[Path]:
        return sorted((self.root / "crds").glob("*.yaml"))

    @property
    def rbac(self) -> list[Path]:
        return [self.root / "rbac" / "controller.yaml", self.root / "rbac" / "reconciler.yaml"]


def find_flux(root: Path | None = None) -> FluxDist:
    """The built Flux (``PRFAAS_FLUX_DIR`` overrides the cache); raises naming the fix."""
    base = root or Path(os.environ.get("PRFAAS_FLUX_DIR") or default_flux_dir())
    dist = FluxDist(base)
    missing = [c for c in CONTROLLERS if not os.access(dist.binary(c), os.X_OK)]
    missing += [str(p.relative_to(base)) for p in dist.rbac if not p.is_file()]
    if not dist.crds:
        missing.append("crds/*.yaml")
    if missing:
        raise FluxMissingError(
            f"{', '.join(missing)} not found in {base}. Run `make flux-bin` (builds Flux's "
            "source-controller and kustomize-controller from Go modules once: ~10 min on 2 "
            "cores, cached by version), or set PRFAAS_FLUX_DIR to such a directory."
        )
    return dist


class Flux:
    """Flux's CRDs and RBAC on ``plane``, and its two controllers as child processes.

    Each controller authenticates as its ServiceAccount (``system:serviceaccount:flux-system:
    <controller>``, client certificate), so it has exactly the permissions Flux's own RBAC grants
    it (kustomize-controller: cluster-admin through ``cluster-reconciler``, as Flux installs it).
    """

    def __init__(
        self,
        plane: ControlPlane,
        state_dir: Path,
        dist: FluxDist | None = None,
        *,
        requeue_dependency: str = "30s",
    ) -> None:
        """``requeue_dependency``: how soon a Kustomization whose dependsOn is not Ready (also:
        being reconciled right now) looks again (kustomize-controller's flag; Flux's default)."""
        self.plane = plane
        self.state_dir = state_dir
        self.dist = dist or find_flux()
        self.requeue_dependency = requeue_dependency
        self.storage_port = 0
        self.procs: dict[str, Proc] = {}

    def install(self) -> None:
        """CRDs (established before anything uses them), namespace ``flux-system``, RBAC."""
        admin = self.plane.kubeconfig
        apply = ("apply", "--server-side", "--field-manager=flux-install")  # idempotent
        crds = [a for crd in self.dist.crds for a in ("-f", str(crd))]
        kubectl(admin, *apply, *crds)
        kubectl(admin, "wait", "--for=condition=Established", "--timeout=60s", *crds)
        namespace = f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n"
        kubectl(admin, *apply, "-f", "-", stdin=namespace)
        kubectl(admin, *apply, *[a for f in self.dist.rbac for a in ("-f", str(f))])

    def start(self) -> Self:
        self.install()
        self.storage_port = free_port()
        storage = f"127.0.0.1:{self.storage_port}"
        (self.state_dir / "storage").mkdir(parents=True, exist_ok=True)  # it must exist
        try:
            self._spawn(
                "source-controller",
                f"--storage-path={self.state_dir / 'storage'}",
                f"--storage-addr={storage}",
                f"--storage-adv-addr={storage}",  # kustomize-controller downloads from here
            )
            self._spawn(
                "kustomize-controller",
                "--no-remote-bases=true",
                f"--requeue-dependency={self.requeue_dependency}",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, *extra: str) -> None:
        kubeconfig = self.plane.kubeconfig_for_user(
            f"system:serviceaccount:{NAMESPACE}:{name}",
            path=self.state_dir / f"{name}.kubeconfig",
        )
        health = free_port()
        argv = [
            str(self.dist.binary(name)),
            f"--metrics-addr=127.0.0.1:{free_port()}",
            f"--health-addr=127.0.0.1:{health}",
            "--enable-leader-election=false",
            "--log-encoding=console",
            "--watch-all-namespaces=true",
            *extra,
        ]
        env = {"KUBECONFIG": str(kubeconfig), "RUNTIME_NAMESPACE": NAMESPACE}
        proc = Proc.spawn(name, argv, self.state_dir / f"{name}.log", env=env, die_with_parent=True)
        self.procs[name] = proc
        proc.wait_ready(lambda: _port_open(health), timeout=60)

    def logs(self) -> str:
        """Every controller's log tail, for assertion messages."""
        return "\n".join(f"--- {n}:\n{p.tail(30)}" for n, p in self.procs.items())

    def stop(self) -> None:
        errors = []
        for proc in reversed(list(self.procs.values())):
            try:
                proc.stop(grace_s=10)
            except ProcessError as e:
                errors.append(str(e))
        self.procs.clear()
        if errors:
            raise ProcessError("; ".join(errors))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
