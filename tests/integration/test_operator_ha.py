"""Two operator replicas with kopf peering, under the RBAC the chart renders for
``operator.replicas=2``: one acts, the other waits; the active one is killed (SIGKILL) in the
middle of a move and the other takes over, with no double scaling and the cooldown kept."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_helpers import ROOT, OperatorProcess, condition, deployment, replicas, wait_for

from prfaas.api import PDCluster
from prfaas_dev.kubectl import kubectl, kubectl_binary

pytestmark = pytest.mark.integration
RELEASE, SYSTEM, NS = "prfaas-operator", "prfaas-ha-system", "ha"
LIFETIME = 5  # --peering-lifetime: how long a dead leader's record keeps the other waiting
INTERVAL = 2  # policy.intervalSeconds of the test's PDCluster
PDC = PDCluster.resource


def _apply(kc: Path, *docs: dict[str, Any]) -> None:
    kubectl(kc, "apply", "--server-side", "--field-manager=tests", "-f", "-",
            stdin=yaml.safe_dump_all(docs))  # fmt: skip


@pytest.fixture(scope="module")
def admin(control_plane: Any) -> Path:
    kc = Path(control_plane.kubeconfig)
    kubectl(kc, "apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl(kc, "wait", "--for=condition=Established", "--timeout=60s",
            f"crd/{PDC.name}", "crd/clusterkopfpeerings.kopf.dev")  # fmt: skip
    for ns in (SYSTEM, NS):
        _apply(kc, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    helm = kubectl_binary().parent / "helm"  # built next to kubectl by `make k8s-bin`
    rendered = subprocess.run(
        [str(helm), "template", RELEASE, str(ROOT / "charts/prfaas-operator"), "--namespace",
         SYSTEM, "--set", "operator.replicas=2", "--set", "router.enabled=false",
         "--set-json", f'operator.watchNamespaces=["{NS}"]',
         "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    kubectl(kc, "apply", "-f", "-", stdin=rendered)
    return kc


@pytest.fixture(scope="module")
def replicas_kubeconfig(control_plane: Any, admin: Path) -> Path:
    return Path(control_plane.kubeconfig_for_serviceaccount(SYSTEM, RELEASE))


def _replica(kc: Path, log: Path, priority: int) -> OperatorProcess:
    return OperatorProcess(
        kc, log, "--peering", RELEASE, "--priority", str(priority),
        "--peering-lifetime", str(LIFETIME), "-n", NS,
    ).start()  # fmt: skip


def _writes(op: OperatorProcess) -> float:
    try:
        text = op.metrics()
    except OSError:
        return 0.0
    lines = [
        ln for ln in text.splitlines() if ln.startswith("prfaas_operator_scale_actions_total{")
    ]
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if f'namespace="{NS}"' in ln)


def _passes(op: OperatorProcess) -> float:
    lines = [
        ln
        for ln in op.metrics().splitlines()
        if ln.startswith("prfaas_operator_reconciles_total{") and f'namespace="{NS}"' in ln
    ]
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)  # fmt: skip


@pytest.fixture
def pair(replicas_kubeconfig: Path, tmp_path: Path) -> Iterator[tuple[OperatorProcess, ...]]:
    # the leader first, so the standby finds it in the peering object and waits from the start
    leader = _replica(replicas_kubeconfig, tmp_path / "leader.log", 200)
    time.sleep(3)
    standby = _replica(replicas_kubeconfig, tmp_path / "standby.log", 100)
    yield leader, standby
    for op in (leader, standby):
        op.stop()


def test_the_standby_takes_over_without_double_scaling(
    admin: Path, pair: tuple[OperatorProcess, OperatorProcess]
) -> None:
    leader, standby = pair
    _apply(
        admin,
        deployment("h200-prefill", NS, 4),
        deployment("h20-prefill", NS, 5),
        deployment("h20-decode", NS, 3),
    )
    samples = ROOT / "manifests/samples"
    pool = yaml.safe_load((samples / "prefillpool-h200.yaml").read_text())
    pd = copy.deepcopy(yaml.safe_load((samples / "pdcluster-h20.yaml").read_text()))
    for doc in (pool, pd):
        doc["metadata"]["namespace"] = NS
    # one instance per change and a long cooldown: the move 5/3 → 3/5 takes two changes
    pd["spec"]["policy"].update(intervalSeconds=INTERVAL, cooldownSeconds=120, maxStep=1)
    _apply(admin, pool, pd)

    wait_for("the leader's first change", lambda: replicas(admin, NS, "h20-decode") == 4, 60)
    wait_for("its metrics", lambda: _writes(leader) == 2)  # decode up, prefill down
    assert _writes(standby) == 0 and _passes(standby) == 0  # the standby waits

    os.kill(leader.proc.popen.pid, signal.SIGKILL)  # type: ignore[union-attr]  # mid-move
    killed = time.monotonic()
    wait_for("the standby's first pass", lambda: _passes(standby) > 0, timeout=LIFETIME + 30)
    took_over = time.monotonic() - killed
    assert took_over <= LIFETIME + INTERVAL + 10, took_over  # the bound in the README
    time.sleep(3 * INTERVAL)
    # the cooldown the leader started (in status) holds the standby: no second change yet
    assert _writes(standby) == 0
    assert (replicas(admin, NS, "h20-prefill"), replicas(admin, NS, "h20-decode")) == (4, 4)
    obj = json.loads(kubectl(admin, "get", PDC.singular, "h20-pd", "-n", NS, "-o", "json").stdout)
    applied = condition(obj, "PlanApplied")
    assert applied is not None and "cooldown" in applied["message"]
