"""The one kubectl wrapper of the dev tooling: the version ``make k8s-bin`` built, run against
an explicit kubeconfig (never an inherited ``$KUBECONFIG``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from prfaas_dev.binaries import find_binaries


class KubeError(RuntimeError):
    """kubectl failed; the message has its error."""


def kubectl_binary(bin_dir: Path | None = None) -> Path:
    return find_binaries(bin_dir)["kubectl"]


def kubectl(
    kubeconfig: Path | str,
    *args: str,
    stdin: str | None = None,
    check: bool = True,
    timeout: float = 120.0,
    bin_dir: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``kubectl --kubeconfig=KUBECONFIG ARGS``; raises :class:`KubeError` on failure when
    ``check``, else the caller reads ``returncode``."""
    proc = subprocess.run(
        [str(kubectl_binary(bin_dir)), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise KubeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc
