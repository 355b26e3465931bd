"""The router follows its PDCluster's ``status.routingPolicy`` on a real API server, as a
ServiceAccount that may only get/list/watch ``pdclusters`` in its namespace."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from kube_helpers import ROOT

from prfaas.api import PDCluster
from prfaas_dev.cluster import ControlPlane
from prfaas_dev.http import http_get
from prfaas_dev.kubectl import kubectl
from prfaas_dev.ports import free_port
from prfaas_dev.stack import Stack

pytestmark = pytest.mark.integration
NS = "router-kube"
PDC = PDCluster.resource

ROLE = f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: prfaas-router, namespace: {NS}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: prfaas-router, namespace: {NS}}}
rules:
  - apiGroups: [{PDC.group}]
    resources: [{PDC.plural}]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: prfaas-router, namespace: {NS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: prfaas-router}}
subjects: [{{kind: ServiceAccount, name: prfaas-router, namespace: {NS}}}]
"""


def _status(kc: Path, version: int, threshold: int, decode: list[str]) -> None:
    policy = {
        "version": version,
        "thresholdTokens": threshold,
        "prefillPools": [],
        "prefillEndpoints": ["http://127.0.0.1:1"],
        "decodeEndpoints": decode,
    }
    kubectl(
        kc,
        "-n",
        NS,
        "patch",
        PDC.singular,
        "h20-pd",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"routingPolicy": policy}}),
    )


def test_router_follows_the_pdcluster_status(control_plane: ControlPlane, tmp_path: Path) -> None:
    kc = control_plane.kubeconfig
    kubectl(kc, "apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl(kc, "create", "namespace", NS, check=False)
    kubectl(kc, "apply", "-f", "-", stdin=ROLE)
    sample = (ROOT / "manifests/samples/pdcluster-h20.yaml").read_text()
    kubectl(kc, "-n", NS, "apply", "-f", "-", stdin=sample.replace("prfaas-demo", NS))
    sa = control_plane.kubeconfig_for_serviceaccount(NS, "prfaas-router", path=tmp_path / "sa")
    # least privilege, checked by the API server itself
    for verb, resource, allowed in (
        ("watch", PDC.plural, "yes"),
        ("patch", PDC.plural, "no"),
        ("list", "secrets", "no"),
        ("get", "configmaps", "no"),
    ):
        out = kubectl(sa, "-n", NS, "auth", "can-i", verb, resource, check=False).stdout.strip()
        assert out == allowed, (verb, resource, out)

    with Stack(tmp_path / "logs") as stack:
        decode = f"http://127.0.0.1:{free_port()}"
        router = stack.router(
            ["--pdcluster", "h20-pd", "-n", NS, "--kubeconfig", str(sa)], "router-kube", "/healthz"
        )
        url, proc = router.url, router.proc
        # nothing planned yet: the router says so instead of guessing
        assert http_get(url + "/readyz")[0] == 503
        _status(kc, 7, 19_400, [decode])

        def policy() -> dict[str, object]:
            return dict(json.loads(http_get(f"{router.admin_url}/policy")[1]))

        deadline = time.monotonic() + 30
        while policy().get("version") != 7:
            assert time.monotonic() < deadline, proc.tail()
            time.sleep(0.3)
        assert policy()["thresholdTokens"] == 19_400 and policy()["decodeEndpoints"] == [decode]
        _status(kc, 8, 25_000, [decode])
        while policy().get("version") != 8:
            assert time.monotonic() < deadline + 30, proc.tail()
            time.sleep(0.3)
        assert policy()["thresholdTokens"] == 25_000
        assert "Forbidden" not in proc.tail(200)
