"""The demo's CRDs and its client for custom objects (kubectl: :mod:`prfaas_dev.kubectl`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from prfaas_dev.demo.kubelet import engine_group_crd


def crds_yaml() -> str:
    from prfaas.api.crdgen import CRDS, crd

    return yaml.safe_dump_all([*(crd(info) for info in CRDS), engine_group_crd()])


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
