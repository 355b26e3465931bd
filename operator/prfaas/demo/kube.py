"""The demo's few calls to the clusters: kubectl for applying, a client for custom objects."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from prfaas.demo.kubelet import engine_group_crd


class KubeError(RuntimeError):
    """kubectl failed; the message has its error."""


def crds_yaml() -> str:
    from prfaas.api.crdgen import CRDS, crd

    return yaml.safe_dump_all([*(crd(info) for info in CRDS), engine_group_crd()])


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    from prfaas.devcluster import find_binaries

    kubectl = str(find_binaries()["kubectl"])
    proc = subprocess.run(
        [kubectl, f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and proc.returncode != 0:
        raise KubeError(f"kubectl {' '.join(args[:3])}: {proc.stderr.strip()}")
    return proc


def custom_api(kubeconfig: Path) -> Any:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    return client.CustomObjectsApi(api)


@contextlib.contextmanager
def quiet_env() -> Iterator[None]:
    """Children must not inherit a KUBECONFIG meant for something else."""
    old = os.environ.pop("KUBECONFIG", None)
    try:
        yield
    finally:
        if old is not None:
            os.environ["KUBECONFIG"] = old
