"""Run the operator suite against clusters that already exist (kind, or your own), not ours.

Set ``PRFAAS_E2E_KUBECONFIGS=a.kubeconfig:b.kubeconfig`` (admin kubeconfigs; the second is the
member cluster) and optionally ``PRFAAS_E2E_STOP_<i>`` = a shell command that takes cluster i
offline (``make e2e-kind`` sets ``docker stop <node>``). ``make e2e-kind`` does all of it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from prfaas_dev.kubectl import kubectl

ENV = "PRFAAS_E2E_KUBECONFIGS"


def configured() -> list[Path]:
    return [Path(p) for p in os.environ.get(ENV, "").split(":") if p]


class ExistingCluster:
    """The slice of ``ControlPlane``'s interface the operator tests use."""

    def __init__(self, kubeconfig: Path, index: int) -> None:
        self.kubeconfig = kubeconfig
        self.index = index
        self._dir = Path(tempfile.mkdtemp(prefix=f"prfaas-e2e-{index}-"))

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return kubectl(self.kubeconfig, *args, check=check)

    def kubeconfig_for_serviceaccount(self, namespace: str, name: str) -> Path:
        token = self.kubectl("create", "token", name, "-n", namespace).stdout.strip()
        view = json.loads(self.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
        view["users"] = [{"name": name, "user": {"token": token}}]
        view["contexts"][0]["context"]["user"] = name
        path = self._dir / f"{namespace}-{name}.kubeconfig"
        path.write_text(json.dumps(view), encoding="utf-8")
        path.chmod(0o600)
        return path

    def stop(self) -> None:
        command = os.environ.get(f"PRFAAS_E2E_STOP_{self.index}")
        if not command:
            raise RuntimeError(f"set PRFAAS_E2E_STOP_{self.index} to take this cluster offline")
        subprocess.run(shlex.split(command), check=True, timeout=120)
