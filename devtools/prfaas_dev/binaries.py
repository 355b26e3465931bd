"""Where the Kubernetes binaries come from: ``hack/build-k8s.sh`` (``make k8s-bin``) builds
kube-apiserver, etcd, kubectl and helm once per version into a cache; ``KUBEBUILDER_ASSETS``
(a directory) or ``TEST_ASSET_KUBE_APISERVER``/``TEST_ASSET_ETCD``/``TEST_ASSET_KUBECTL``
(single files) point elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

# Keep in step with hack/build-k8s.sh (tests/integration checks that both name the same dir).
K8S_VERSION = "1.36.3"
ETCD_VERSION = "3.6.16"
HELM_VERSION = "3.22.0"

BINARIES = ("kube-apiserver", "etcd", "kubectl")
_ASSET_ENV = {
    "kube-apiserver": "TEST_ASSET_KUBE_APISERVER",
    "etcd": "TEST_ASSET_ETCD",
    "kubectl": "TEST_ASSET_KUBECTL",
}


class DevClusterError(RuntimeError):
    """The control plane could not be started, reached or stopped."""


class BinariesMissingError(DevClusterError):
    """kube-apiserver/etcd/kubectl are not where they were looked for."""


def cache_root() -> Path:
    if env := os.environ.get("PRFAAS_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "prfaas-operator"


def default_bin_dir() -> Path:
    """Where ``hack/build-k8s.sh`` puts the binaries (``hack/build-k8s.sh --print-dir``)."""
    key = f"k8s-v{K8S_VERSION}-etcd-v{ETCD_VERSION}-helm-v{HELM_VERSION}"
    return cache_root() / key / "bin"


def find_binaries(bin_dir: Path | None = None) -> dict[str, Path]:
    """kube-apiserver, etcd and kubectl; raises :class:`BinariesMissingError` naming the fix."""
    if bin_dir is not None:
        base, origin = bin_dir, "bin_dir argument"
    elif assets := os.environ.get("KUBEBUILDER_ASSETS"):
        base, origin = Path(assets), "KUBEBUILDER_ASSETS"
    else:
        base, origin = default_bin_dir(), "build cache"
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in BINARIES:
        override = os.environ.get(_ASSET_ENV[name]) if bin_dir is None else None
        path = Path(override) if override else base / name
        if path.is_file() and os.access(path, os.X_OK):
            found[name] = path.absolute()
        else:
            missing.append(f"{name} ({_ASSET_ENV[name]})" if override else name)
    if missing:
        raise BinariesMissingError(
            f"{', '.join(missing)} not found in {base} ({origin}). "
            "Run `make k8s-bin` (builds kube-apiserver, etcd, kubectl and helm from Go modules "
            "once: ~6-9 min on 2 cores, cached by version), or set KUBEBUILDER_ASSETS to a "
            "directory holding kube-apiserver, etcd and kubectl."
        )
    return found
