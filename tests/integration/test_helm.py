"""The Helm chart with the real ``helm`` binary and a real kube-apiserver.

Lint, the values schema, drift of the committed manifests/, server-side dry-run, install and
uninstall, RBAC minimality (parsed and proven with ``kubectl auth can-i``), idempotent apply.
The release here is not ``prfaas-operator``: test_operator.py owns that name on the shared
control plane.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_helpers import ROOT, get_json

from prfaas.api import PDCluster, PrefillPool
from prfaas_dev.kubectl import kubectl, kubectl_binary

pytestmark = pytest.mark.integration
CHART = ROOT / "charts" / "prfaas-operator"
RELEASE = "prfaas-operator-it"  # distinct from test_operator.py's prfaas-operator
PDC, POOL = PDCluster.resource, PrefillPool.resource
# Exactly what `make manifests` runs (Makefile: MANIFESTS_HELM_ARGS and the --show-only lists).
MANIFESTS_ARGS = [
    "prfaas-operator",
    str(CHART),
    "--namespace",
    "prfaas-system",
    "--set",
    "router.enabled=false",
]
GENERATED = {
    "rbac.yaml": ["templates/serviceaccount.yaml", "templates/rbac.yaml"],
    "operator.yaml": [
        "templates/deployment.yaml",
        "templates/service.yaml",
        "templates/dashboard.yaml",
    ],
}
HEADER = (
    "# Generated from charts/prfaas-operator by `make manifests` (helm template): do not edit.\n"
)


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Helm's cache/config/data under a temp dir: the tests never touch the user's Helm setup."""
    home = tmp_path_factory.mktemp("helm-home")
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def helm_binary() -> str:
    """helm is built by `make k8s-bin` next to kubectl; missing, the test fails (never skips)."""
    path = Path(kubectl_binary()).parent / "helm"
    assert path.is_file() and os.access(path, os.X_OK), f"{path} missing: run `make k8s-bin`"
    return str(path)


def helm(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def render(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    out = helm(env, "template", RELEASE, str(CHART), *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def namespace(kubeconfig: Path, name: str) -> str:
    kubectl(kubeconfig, "create", "namespace", name)
    return name


def can_i(kubeconfig: Path, user: str, *args: str) -> bool:
    proc = kubectl(kubeconfig, "auth", "can-i", *args, f"--as={user}", check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), proc.stderr
    return answer == "yes"


def sa(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


@pytest.fixture(scope="module")
def admin(control_plane: Any) -> Path:
    """Admin kubeconfig, with the CRDs established (the chart's are the repo's, byte for byte)."""
    kc = Path(control_plane.kubeconfig)
    kubectl(kc, "apply", "--server-side", "-f", str(CHART / "crds"))
    kubectl(
        kc,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        f"crd/{PDC.name}",
        f"crd/{POOL.name}",
    )
    return kc


# -- the chart on its own ------------------------------------------------------------------------


def test_helm_lint_strict(helm_env: dict[str, str]) -> None:
    proc = helm(helm_env, "lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout
    for values in (
        ["--set", "router.enabled=false"],
        ["--set", "serviceMonitor.enabled=true", "--set", "grafana.dashboard.enabled=false"],
        ["--set-json", 'operator.watchNamespaces=["a","b"]'],
    ):
        helm(helm_env, "lint", "--strict", str(CHART), *values)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "bogus=1"], "additional properties 'bogus' not allowed"),
        (["--set", "operator.bogus=1"], "at '/operator': additional properties 'bogus'"),
        (["--set", "router.service.nodePort=1"], "additional properties 'nodePort'"),
        (["--set-json", 'scaleTargets=[{"apiGroup":"apps"}]'], "missing property 'resource'"),
        (["--set", "operator.dryRun=yes"], "at '/operator/dryRun': got string, want boolean"),
        (["--set", "operator.metricsPort=abc"], "at '/operator/metricsPort': got string"),
        (["--set", "operator.metricsPort=70000"], "at '/operator/metricsPort'"),
        (["--set", "operator.logFormat=xml"], "at '/operator/logFormat'"),
        (["--set", "image.pullPolicy=Sometimes"], "at '/image/pullPolicy'"),
    ],
)
def test_values_schema_rejects_bad_values(
    helm_env: dict[str, str], args: list[str], message: str
) -> None:
    proc = helm(helm_env, "template", RELEASE, str(CHART), *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_committed_manifests_match_a_fresh_helm_template(helm_env: dict[str, str]) -> None:
    for name, templates in GENERATED.items():
        show = [a for t in templates for a in ("--show-only", t)]
        fresh = HEADER + helm(helm_env, "template", *MANIFESTS_ARGS, *show).stdout
        committed = (ROOT / "manifests" / "operator" / name).read_text(encoding="utf-8")
        assert committed == fresh, f"manifests/operator/{name} drifted: run `make manifests`"


def test_operator_deployment_is_hardened_and_configured(helm_env: dict[str, str]) -> None:
    docs = render(
        helm_env,
        "--set-json",
        'operator.watchNamespaces=["team-a","team-b"]',
        "--set",
        "operator.dryRun=true",
        "--set",
        "image.tag=9.9.9",
    )
    (dep,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == RELEASE]
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "prfaas-operator:9.9.9"
    assert c["args"] == [
        "operator",
        "--namespace=team-a",
        "--namespace=team-b",
        "--metrics-port=9090",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--log-format=json",
        "--dry-run",
    ]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 9090, "health": 8080}
    _assert_hardened(pod)
    # the default: all namespaces, no dry run, the appVersion tag
    default = render(helm_env)
    (dep,) = [d for d in default if d["kind"] == "Deployment" and d["metadata"]["name"] == RELEASE]
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args and "--dry-run" not in args
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "prfaas-operator:0.1.0"


def _assert_hardened(pod: dict[str, Any]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        assert c["resources"]["requests"] and c["resources"]["limits"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]


def test_router_deployment_service_and_role(helm_env: dict[str, str]) -> None:
    docs = render(
        helm_env,
        "--namespace",
        "ops",
        "--set",
        "router.namespace=prfaas-demo",
        "--set",
        "router.pdCluster=h20-pd",
        "--set",
        "router.model=m1",
    )
    name = f"{RELEASE}-router"
    by_kind = {d["kind"]: d for d in docs if d["metadata"]["name"] == name}
    assert set(by_kind) == {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service"}
    assert {d["metadata"]["namespace"] for d in by_kind.values()} == {"prfaas-demo"}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == name
    (c,) = pod["containers"]
    assert c["args"] == [
        "router",
        "--pdcluster",
        "h20-pd",
        "--namespace",
        "prfaas-demo",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--model",
        "m1",
        *("--max-tokens-limit", "32768", "--max-prompt-tokens", "262144"),
        *("--max-concurrency", "1024", "--max-json-depth", "64"),
        *("--idle-timeout", "15", "--body-timeout", "60"),
    ]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # ready only once it runs a routing policy and a decode engine answers
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    _assert_hardened(pod)
    assert by_kind["Service"]["spec"]["ports"][0]["port"] == 8000
    assert by_kind["Role"]["rules"] == [
        {"apiGroups": [PDC.group], "resources": [PDC.plural], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["list", "watch"],
        },
    ]
    off = render(helm_env, "--set", "router.enabled=false")
    assert not [d for d in off if "router" in d["metadata"]["name"]]


def test_router_trust_values(helm_env: dict[str, str]) -> None:
    """Allowlist, API keys from a Secret (mounted as a directory, so a rotation reaches the
    router), limits and the admin port become the router's flags."""
    docs = render(
        helm_env,
        *("--set", "router.allowEndpoints={10.8.0.0/16,*.svc.cluster.local}"),
        *("--set", "router.apiKeys.secret=router-keys", "--set", "router.limits.maxTokens=4096"),
        *("--set", "router.adminPort=8001"),
    )
    (dep,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(
        "-router")]  # fmt: skip
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = c["args"]
    pairs = list(itertools.pairwise(args))
    assert ("--max-tokens-limit", "4096") in pairs and ("--admin-port", "8001") in pairs
    assert ("--allow-endpoint", "10.8.0.0/16") in pairs
    assert ("--allow-endpoint", "*.svc.cluster.local") in pairs
    assert ("--api-key-file", "/etc/prfaas/api-keys/keys") in pairs
    assert {"name": "api-keys", "mountPath": "/etc/prfaas/api-keys", "readOnly": True} in c[
        "volumeMounts"]  # fmt: skip
    vol = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    assert vol["secret"] == {"secretName": "router-keys", "defaultMode": 0o440}
    assert [p["containerPort"] for p in c["ports"]] == [8000]  # admin: loopback, not a port


def test_service_monitor_and_dashboard_toggles(helm_env: dict[str, str]) -> None:
    default = render(helm_env)
    assert not [d for d in default if d["kind"] == "ServiceMonitor"]
    (cm,) = [d for d in default if d["kind"] == "ConfigMap"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"]["prfaas.json"] == (CHART / "dashboards" / "prfaas.json").read_text().rstrip(
        "\n"
    )
    on = render(
        helm_env, "--set", "serviceMonitor.enabled=true", "--set", "grafana.dashboard.enabled=false"
    )
    monitors = {d["metadata"]["name"]: d for d in on if d["kind"] == "ServiceMonitor"}
    assert set(monitors) == {RELEASE, f"{RELEASE}-router"}
    (svc,) = [
        d for d in on if d["kind"] == "Service" and d["metadata"]["name"].endswith("-metrics")
    ]
    selector = monitors[RELEASE]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= svc["metadata"]["labels"].items()
    assert not [d for d in on if d["kind"] == "ConfigMap"]


# -- RBAC: parsed --------------------------------------------------------------------------------


def _rules(docs: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (d["kind"], d["metadata"]["name"], rule)
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
        for rule in d.get("rules", [])
    ]


def test_rbac_has_no_wildcards_and_secrets_only_by_name(helm_env: dict[str, str]) -> None:
    docs = render(
        helm_env,
        "--set-json",
        'memberSecrets=[{"namespace":"ns-a","name":"dc-east"},{"namespace":"ns-a","name":"dc-north"},'
        '{"namespace":"ns-b","name":"dc-east"}]',
        "--set-json",
        'scaleTargets=[{"apiGroup":"apps","resource":"deployments"},'
        '{"apiGroup":"leaderworkerset.x-k8s.io","resource":"leaderworkersets"}]',
    )
    rules = _rules(docs)
    assert rules
    for kind, name, rule in rules:
        for field in ("verbs", "resources", "apiGroups", "resourceNames"):
            assert not any("*" in v for v in rule.get(field, [])), (kind, name, rule)
        assert not {
            "delete",
            "deletecollection",
            "update",
            "escalate",
            "bind",
            "impersonate",
        } & set(rule["verbs"]), (kind, name, rule)
        if "secrets" in rule["resources"]:
            assert kind == "Role", f"{kind} {name} grants secrets"
            assert rule["resourceNames"] and rule["verbs"] == ["get"], rule
    secret_roles = {
        d["metadata"]["namespace"]: d["rules"][0]["resourceNames"]
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["name"].endswith("member-secrets")
    }
    assert secret_roles == {"ns-a": ["dc-east", "dc-north"], "ns-b": ["dc-east"]}
    scale = sorted(r for _, _, rule in rules for r in rule["resources"] if r.endswith("/scale"))
    assert scale == ["deployments/scale", "leaderworkersets/scale"]
    # no Secret rule at all without memberSecrets
    assert not [r for _, _, r in _rules(render(helm_env)) if "secrets" in r["resources"]]


def test_watch_namespaces_bind_per_namespace(helm_env: dict[str, str]) -> None:
    docs = render(helm_env, "--set-json", 'operator.watchNamespaces=["team-a","team-b"]')
    bindings = [
        (d["kind"], d["metadata"].get("namespace"), d["roleRef"]["name"])
        for d in docs
        if d["kind"].endswith("Binding")
    ]
    assert ("ClusterRoleBinding", None, RELEASE) not in bindings
    assert ("RoleBinding", "team-a", RELEASE) in bindings
    assert ("RoleBinding", "team-b", RELEASE) in bindings
    assert ("ClusterRoleBinding", None, f"{RELEASE}-crds") in bindings


# -- against the API server ----------------------------------------------------------------------


def test_rendered_chart_passes_server_side_dry_run(admin: Path, helm_env: dict[str, str]) -> None:
    ns = namespace(admin, "helm-dry-run")
    out = helm(
        helm_env,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        ns,
        "--set-json",
        f'memberSecrets=[{{"namespace":"{ns}","name":"dc-east"}}]',
        "--set-json",
        f'operator.watchNamespaces=["{ns}"]',
    ).stdout
    proc = kubectl(admin, "apply", "--dry-run=server", "-f", "-", stdin=out)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len([d for d in yaml.safe_load_all(out) if d])
    assert all(line.endswith("(server dry run)") for line in lines), lines
    # nothing was created
    assert kubectl(admin, "get", "deployment", RELEASE, "-n", ns, check=False).returncode != 0


@pytest.fixture(scope="module")
def installed(admin: Path, helm_env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """A helm release in a fresh namespace; the watched namespace is another fresh one."""
    ns = namespace(admin, "helm-it")
    watched = namespace(admin, "helm-it-watched")
    namespace(admin, "helm-it-other")
    helm(
        helm_env,
        "install",
        RELEASE,
        str(CHART),
        "--kubeconfig",
        str(admin),
        "--namespace",
        ns,
        "--set-json",
        f'operator.watchNamespaces=["{watched}"]',
        "--set-json",
        f'memberSecrets=[{{"namespace":"{watched}","name":"dc-east"}}]',
        "--set",
        f"router.namespace={watched}",
    )
    yield ns, watched
    helm(helm_env, "uninstall", RELEASE, "--kubeconfig", str(admin), "--namespace", ns, check=False)


def test_helm_install_creates_the_objects(admin: Path, installed: tuple[str, str]) -> None:
    ns, watched = installed
    for kind, name, where in [
        ("serviceaccount", RELEASE, ns),
        ("deployment", RELEASE, ns),
        ("service", f"{RELEASE}-metrics", ns),
        ("configmap", f"{RELEASE}-dashboard", ns),
        ("rolebinding", RELEASE, watched),
        ("role", f"{RELEASE}-member-secrets", watched),
        ("deployment", f"{RELEASE}-router", watched),
        ("service", f"{RELEASE}-router", watched),
        ("role", f"{RELEASE}-router", watched),
    ]:
        assert get_json(admin, kind, name, "-n", where)["metadata"]["name"] == name
    for name in (RELEASE, f"{RELEASE}-crds"):
        assert (
            get_json(admin, "clusterrole", name)["metadata"]["labels"]["app.kubernetes.io/instance"]
            == RELEASE
        )
    assert kubectl(admin, "get", "clusterrolebinding", RELEASE, check=False).returncode != 0


def test_can_i_as_the_charts_service_accounts(admin: Path, installed: tuple[str, str]) -> None:
    ns, watched = installed
    op = sa(ns, RELEASE)
    # what the operator does, in the namespace it watches
    assert can_i(admin, op, "patch", PDC.name, "--subresource=status", "-n", watched)
    assert can_i(admin, op, "patch", POOL.name, "--subresource=status", "-n", watched)
    assert can_i(admin, op, "watch", PDC.name, "-n", watched)
    assert can_i(admin, op, "watch", POOL.name, "-n", watched)  # the passes' index of pools
    assert can_i(admin, op, "patch", "deployments.apps", "--subresource=scale", "-n", watched)
    assert can_i(admin, op, "patch", "statefulsets.apps", "--subresource=scale", "-n", watched)
    assert can_i(admin, op, "create", "events", "-n", watched)
    assert can_i(admin, op, "list", "pods", "-n", watched)  # Pending pods of scale targets
    assert not can_i(admin, op, "get", "pods", "-n", watched)
    assert not can_i(admin, op, "delete", "pods", "-n", watched)
    assert not can_i(admin, op, "get", "pods", "--subresource=log", "-n", watched)
    assert not can_i(admin, op, "list", "pods", "-n", ns)  # only where it watches
    assert can_i(admin, op, "get", "secrets/dc-east", "-n", watched)
    assert can_i(admin, op, "watch", "customresourcedefinitions.apiextensions.k8s.io")
    assert can_i(admin, op, "watch", "endpointslices.discovery.k8s.io", "-n", watched)
    assert can_i(admin, op, "list", "endpointslices.discovery.k8s.io", "-n", watched)
    # and nothing else
    assert not can_i(admin, op, "list", "secrets", "-n", watched)
    assert not can_i(admin, op, "get", "secrets/other", "-n", watched)
    assert not can_i(admin, op, "get", "secrets", "-A")
    assert not can_i(admin, op, "get", "secrets", "-n", ns)
    assert not can_i(admin, op, "delete", PDC.name, "-n", watched)
    assert not can_i(admin, op, "update", PDC.name, "-n", watched)
    assert not can_i(admin, op, "create", PDC.name, "-n", watched)
    assert not can_i(admin, op, "patch", POOL.name, "-n", watched)
    assert not can_i(admin, op, "patch", "deployments.apps", "-n", watched)  # only /scale
    assert not can_i(admin, op, "patch", "replicasets.apps", "--subresource=scale", "-n", watched)
    assert not can_i(
        admin, op, "patch", "leaderworkersets.leaderworkerset.x-k8s.io", "--subresource=scale"
    )
    assert not can_i(admin, op, "create", "configmaps", "-n", watched)
    assert not can_i(admin, op, "delete", "customresourcedefinitions.apiextensions.k8s.io")
    assert not can_i(admin, op, "create", "endpointslices.discovery.k8s.io", "-n", watched)
    # watchNamespaces: nothing outside the watched namespace
    assert not can_i(admin, op, "patch", PDC.name, "--subresource=status", "-A")
    assert not can_i(
        admin, op, "patch", "deployments.apps", "--subresource=scale", "-n", "helm-it-other"
    )
    # the router reads its PDCluster and its engines' EndpointSlices, in its namespace only
    router = sa(watched, f"{RELEASE}-router")
    assert can_i(admin, router, "watch", PDC.name, "-n", watched)
    assert can_i(admin, router, "watch", "endpointslices.discovery.k8s.io", "-n", watched)
    assert not can_i(admin, router, "list", PDC.name, "-n", "helm-it-other")
    assert not can_i(
        admin, router, "list", "endpointslices.discovery.k8s.io", "-n", "helm-it-other"
    )
    assert not can_i(admin, router, "update", "endpointslices.discovery.k8s.io", "-n", watched)
    assert not can_i(admin, router, "patch", PDC.name, "-n", watched)
    assert not can_i(admin, router, "patch", PDC.name, "--subresource=status")
    assert not can_i(admin, router, "get", "secrets", "-n", watched)


def test_helm_uninstall_removes_everything_but_the_crds(
    admin: Path, helm_env: dict[str, str], installed: tuple[str, str]
) -> None:
    ns, watched = installed
    helm(helm_env, "uninstall", RELEASE, "--kubeconfig", str(admin), "--namespace", ns)
    for kind, name, where in [
        ("serviceaccount", RELEASE, ns),
        ("deployment", RELEASE, ns),
        ("service", f"{RELEASE}-metrics", ns),
        ("configmap", f"{RELEASE}-dashboard", ns),
        ("rolebinding", RELEASE, watched),
        ("role", f"{RELEASE}-member-secrets", watched),
        ("deployment", f"{RELEASE}-router", watched),
    ]:
        got = kubectl(admin, "get", kind, name, "-n", where, check=False)
        assert got.returncode != 0 and "NotFound" in got.stderr, (kind, name)
    for name in (RELEASE, f"{RELEASE}-crds"):
        assert kubectl(admin, "get", "clusterrole", name, check=False).returncode != 0
    assert not can_i(admin, sa(ns, RELEASE), "patch", PDC.name, "-n", watched)
    # Helm's caveat: the CRDs in crds/ stay (and with them every PDCluster and PrefillPool)
    get_json(admin, "crd", PDC.name)
    get_json(admin, "crd", POOL.name)


# -- the plain manifests -------------------------------------------------------------------------


def test_kubectl_apply_k_manifests_twice_changes_nothing(admin: Path) -> None:
    kubectl(admin, "apply", "-k", str(ROOT / "manifests"))
    second = kubectl(admin, "apply", "-k", str(ROOT / "manifests")).stdout.strip().splitlines()
    assert len(second) == 13, (
        second
    )  # namespace, 4 CRDs (2 kopf peering), SA, 2 ClusterRoles, 2 bindings, 3 more
    assert all(line.endswith(" unchanged") for line in second), second
    op = sa("prfaas-system", "prfaas-operator")
    assert can_i(admin, op, "patch", PDC.name, "--subresource=status", "-A")
    assert can_i(admin, op, "patch", "deployments.apps", "--subresource=scale", "-A")
    assert not can_i(admin, op, "list", "secrets", "-A")
    assert not can_i(admin, op, "delete", PDC.name, "-A")
    deploy = get_json(admin, "deployment", "prfaas-operator", "-n", "prfaas-system")
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == "prfaas-operator"
    assert kubectl(
        admin, "get", "deployment", "-n", "prfaas-system", "-o", "name"
    ).stdout.split() == [
        "deployment.apps/prfaas-operator"
    ]  # the router is not part of the plain install


# -- the knobs platform teams expect ------------------------------------------------------------

KNOBS = {
    "image": {"repository": "registry.example/prfaas", "digest": "sha256:" + "a" * 64},
    "imagePullSecrets": [{"name": "pull"}],
    "serviceMonitor": {"enabled": True, "relabelings": [{"action": "labeldrop", "regex": "pod"}]},
    **{
        component: {
            "podLabels": {"team": "ml-infra"},
            "podAnnotations": {"note": "x"},
            "nodeSelector": {"node-role": "cpu"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "zone", "operator": "In",
                                                   "values": ["a"]}]}
                        ]
                    }
                }
            },
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
                 "labelSelector": {"matchLabels": {"team": "ml-infra"}}}
            ],
            "priorityClassName": "system-cluster-critical",
            "extraArgs": ["--verbose"],
            "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
            "extraVolumes": [{"name": "extra", "emptyDir": {}}],
            "extraVolumeMounts": [{"name": "extra", "mountPath": "/extra"}],
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                          "limits": {"memory": "128Mi"}},
        }
        for component in ("operator", "router")
    },
}  # fmt: skip


def _knobs(extra: dict[str, Any] | None = None) -> list[str]:
    values = copy.deepcopy(KNOBS)
    router = values["router"]
    router.update(
        tokenizer={"configMap": "tokenizers", "key": "kimi.json"},
        podDisruptionBudget={"enabled": True, "minAvailable": 1},
        autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 5},
        workers=4,
        **(extra or {}),
    )
    return [a for k, v in values.items() for a in ("--set-json", f"{k}={json.dumps(v)}")]


def test_every_knob_reaches_the_pods(helm_env: dict[str, str]) -> None:
    docs = render(helm_env, *_knobs())
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    for dep in by_kind["Deployment"]:
        tpl = dep["spec"]["template"]
        pod, (c,) = tpl["spec"], tpl["spec"]["containers"]
        assert tpl["metadata"]["labels"]["team"] == "ml-infra"
        assert tpl["metadata"]["annotations"] == {"note": "x"}
        assert pod["nodeSelector"] == {"node-role": "cpu"}
        assert pod["tolerations"][0]["key"] == "dedicated"
        assert pod["affinity"] == KNOBS["operator"]["affinity"]
        assert pod["topologySpreadConstraints"][0]["topologyKey"] == "zone"
        assert pod["priorityClassName"] == "system-cluster-critical"
        assert pod["imagePullSecrets"] == [{"name": "pull"}]
        assert c["image"] == "registry.example/prfaas@sha256:" + "a" * 64
        assert c["args"][-1] == "--verbose"
        assert c["env"] == [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]
        assert {"name": "extra", "mountPath": "/extra"} in c["volumeMounts"]
        assert {"name": "extra", "emptyDir": {}} in pod["volumes"]
        assert c["resources"]["limits"] == {"memory": "128Mi"}
        _assert_hardened(pod)
    (router,) = [d for d in by_kind["Deployment"] if d["metadata"]["name"].endswith("router")]
    rc = router["spec"]["template"]["spec"]["containers"][0]
    assert "replicas" not in router["spec"]  # the HPA owns it
    assert rc["args"][rc["args"].index("--tokenizer") + 1] == "/etc/prfaas/tokenizer/kimi.json"
    assert {"name": "tokenizer", "configMap": {"name": "tokenizers"}} in router["spec"]["template"][
        "spec"
    ]["volumes"]
    assert rc["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert rc["args"][rc["args"].index("--workers") + 1] == "4"
    (pdb,) = by_kind["PodDisruptionBudget"]
    (hpa,) = by_kind["HorizontalPodAutoscaler"]
    assert pdb["spec"]["minAvailable"] == 1
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    for sm in by_kind["ServiceMonitor"]:
        (ep,) = sm["spec"]["endpoints"]
        assert ep["honorLabels"] is True
        assert ep["relabelings"] == [{"action": "labeldrop", "regex": "pod"}]


def test_openshift_can_drop_the_fixed_uid(helm_env: dict[str, str]) -> None:
    docs = render(
        helm_env,
        "--set-json",
        'podSecurityContext={"runAsUser":null,"runAsGroup":null,"fsGroup":null}',
        "--set-json",
        'containerSecurityContext={"runAsUser":null}',
    )
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert "runAsUser" not in pod["securityContext"] and "fsGroup" not in pod["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        sc = pod["containers"][0]["securityContext"]
        assert "runAsUser" not in sc and sc["runAsNonRoot"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "image.digest=latest"], "at '/image/digest'"),
        (["--set", "router.autoscaling.maxReplicas=0"], "at '/router/autoscaling/maxReplicas'"),
        (["--set", "router.tokenizer.bogus=1"], "additional properties 'bogus'"),
        (["--set", "serviceMonitor.honorLabels=maybe"], "at '/serviceMonitor/honorLabels'"),
        (["--set", "operator.extraArgs=--x"], "at '/operator/extraArgs'"),
        (["--set", "router.workers=0"], "at '/router/workers'"),
    ],
)
def test_the_new_knobs_reject_bad_values(
    helm_env: dict[str, str], args: list[str], message: str
) -> None:
    proc = helm(helm_env, "template", RELEASE, str(CHART), *args, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_every_knob_passes_server_side_dry_run(admin: Path, helm_env: dict[str, str]) -> None:
    ns = namespace(admin, "helm-knobs")
    rendered = helm(helm_env, "template", RELEASE, str(CHART), "--namespace", ns, *_knobs())
    # the PriorityClass named exists in every cluster; ServiceMonitor needs prometheus-operator
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] != "ServiceMonitor"]
    proc = kubectl(admin, "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(docs))
    lines = proc.stdout.strip().splitlines()
    assert lines and all(line.endswith("(server dry run)") for line in lines), lines
    assert any(line.startswith("horizontalpodautoscaler") for line in lines)
    assert any(line.startswith("poddisruptionbudget") for line in lines)
