"""Helpers for tests against a real API server: reading objects, waiting, a running operator
(kubectl itself: :mod:`prfaas_dev.kubectl`)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prfaas_dev.cluster import scale_target
from prfaas_dev.kubectl import KubeError, kubectl
from prfaas_dev.ports import free_port
from prfaas_dev.procs import Proc

ROOT = Path(__file__).resolve().parents[2]


def get_json(kubeconfig: Path | str, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(kubectl(kubeconfig, "get", *args, "-o", "json").stdout)
    return out


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (AssertionError, KubeError) as exc:  # not there yet
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def replicas(kubeconfig: Path | str, namespace: str, name: str) -> int:
    doc = get_json(kubeconfig, "deployment", name, "-n", namespace)
    return int(doc["spec"]["replicas"])


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions", []):
        if c["type"] == ctype:
            return dict(c)
    return None


def deployment(name: str, namespace: str, replicas: int) -> dict[str, Any]:
    return dict(scale_target(name, namespace, replicas))


def member_secret(admin: Path, member: Path, ns: str, name: str = "dc-east") -> None:
    """The member kubeconfig as a Secret, readable by the operator by name only."""
    kubectl(
        admin, "create", "secret", "generic", name, "-n", ns, f"--from-file=kubeconfig={member}"
    )
    rbac = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": f"prfaas-operator-{name}", "namespace": ns},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "verbs": ["get"],
                    "resourceNames": [name],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"prfaas-operator-{name}", "namespace": ns},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": f"prfaas-operator-{name}",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "prfaas-operator", "namespace": "prfaas-system"}
            ],
        },
    ]
    doc = {"apiVersion": "v1", "kind": "List", "items": rbac}
    kubectl(admin, "apply", "-f", "-", stdin=json.dumps(doc))


class OperatorProcess:
    """``prfaas operator`` as a child process with its own kubeconfig (its RBAC identity).

    ``command``: the arguments to start from (e.g. the container args of the operator's
    Deployment); loopback ports and plain logs are appended, so they win.
    """

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *extra: str,
        command: tuple[str, ...] = ("operator",),
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra = extra
        self.command = command
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: Proc | None = None

    def start(self) -> OperatorProcess:
        argv = [sys.executable, "-m", "prfaas.cli", *self.command, "--log-format", "plain"]
        argv += ["--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics_port)]
        argv += ["--liveness", f"http://127.0.0.1:{self.health_port}/healthz", *self.extra]
        env = {"KUBECONFIG": str(self.kubeconfig)}
        # appended: a restarted operator keeps the first one's log
        self.proc = Proc.spawn("operator", argv, self.log_path, env=env, append=True)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(grace_s=15)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            text: str = r.read().decode()
        return text
