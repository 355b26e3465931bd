"""GitOps on real parts: Flux reconciles this repository's manifests from a git server, and the
operator lives with it.

Flux's source-controller and kustomize-controller (built from Go modules by ``make flux-bin``)
run as local processes under Flux's own RBAC against a real kube-apiserver + etcd; a git server
(git's smart-HTTP backend on loopback) serves a repository this module creates from
``manifests/``; Flux applies exactly the resources of ``manifests/gitops/flux/`` (only the URL and
the intervals are changed, for test speed). The operator runs as a local process with the args
of the Deployment that Flux applied and a token of the ServiceAccount Flux created (the test API
server has no kubelet, so that Deployment runs nothing). The API server's audit log tells who
wrote what: the no-flapping claims are counts of writes over several reconcile intervals.
"""

from __future__ import annotations

import contextlib
import copy
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from audit_log import AuditLog, audit_args
from kube_helpers import ROOT, OperatorProcess, condition, get_json, kubectl, replicas, wait_for

from prfaas_dev.cluster import BinariesMissingError, ControlPlane, DevClusterError
from prfaas_dev.flux import Flux, FluxMissingError, default_flux_dir, find_flux
from prfaas_dev.gitserver import GitRepo, GitServer

pytestmark = pytest.mark.integration

NS = "prfaas-demo"
FLUX_NS = "flux-system"
KUSTOMIZATIONS = ("prfaas-operator", "prfaas-samples", "prfaas-engines")
SOURCE_INTERVAL, KS_INTERVAL = "2s", "10s"
KS_INTERVAL_S = 10.0
STEADY_RECONCILES = 3  # a steady state is watched over this many Flux reconciles
FLUX = "flux-system:kustomize-controller"
OPERATOR = "prfaas-system:prfaas-operator"
TARGETS = ("h20-prefill", "h20-decode")  # the operator's /scale targets (PD-P, PD-D)
PDC_FILE = "manifests/samples/pdcluster-h20.yaml"
ENGINES_FILE = "manifests/gitops/engines/kustomization.yaml"


@dataclass
class GitOps:
    plane: ControlPlane
    admin: Path
    repo: GitRepo
    flux: Flux
    audit: AuditLog
    operator: OperatorProcess | None = None  # started once Flux has applied its Deployment

    def revision(self) -> str:
        return f"{self.repo.branch}@sha1:{self.repo.head()}"

    def kustomization(self, name: str) -> dict[str, Any]:
        return get_json(
            self.admin, "kustomizations.kustomize.toolkit.fluxcd.io", name, "-n", FLUX_NS
        )

    def pdcluster(self) -> dict[str, Any]:
        return get_json(self.admin, "pdclusters.prfaas.io", "h20-pd", "-n", NS)

    def edit(self, changes: dict[str, list[tuple[str, str]]]) -> str:
        """Edit files of the repository as a person would (text), in one commit; push it."""
        files = {}
        for rel, replacements in changes.items():
            text = (self.repo.work / rel).read_text(encoding="utf-8")
            for old, new in replacements:
                assert text.count(old) == 1, f"{rel}: {old!r} occurs {text.count(old)} times"
                text = text.replace(old, new)
            files[rel] = text
        return self.repo.commit(f"edit {', '.join(changes)}", files)

    def applied(self, *names: str, revision: str | None = None, timeout: float = 90) -> None:
        """Until each Kustomization is Ready with ``revision`` (default: HEAD) applied."""
        want = revision or self.revision()

        def done() -> bool:
            for name in names:
                ks = self.kustomization(name)
                ready = condition(ks, "Ready") or {}
                status = ks.get("status") or {}
                if (
                    ready.get("status") != "True"
                    or status.get("lastAppliedRevision") != want
                    or status.get("observedGeneration") != ks["metadata"]["generation"]
                ):
                    return False
            return True

        try:
            wait_for(f"{', '.join(names)} to apply {want}", done, timeout=timeout)
        except AssertionError as e:
            states = {n: condition(self.kustomization(n), "Ready") for n in names}
            raise AssertionError(f"{e}\nReady conditions: {states}\n{self.flux.logs()}") from None


def flux_resources(url: str) -> list[dict[str, Any]]:
    """manifests/gitops/flux/ as shipped, pointed at the test's git server, with test intervals."""
    docs: list[dict[str, Any]] = []
    for path in sorted((ROOT / "manifests/gitops/flux").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        if doc["kind"] == "GitRepository":
            doc["spec"].update(url=url, interval=SOURCE_INTERVAL)
        else:
            doc["spec"].update(interval=KS_INTERVAL, retryInterval=KS_INTERVAL)
    return docs


def apply(kubeconfig: Path, *docs: dict[str, Any]) -> None:
    kubectl(
        kubeconfig,
        *("apply", "--server-side", "--field-manager=tests", "-f", "-"),
        stdin=yaml.safe_dump_all(docs),
    )


def start_plane(state: Path) -> ControlPlane:
    args, _ = audit_args(state)
    plane = ControlPlane(state_dir=state, extra_apiserver_args=args)
    failure = ""
    try:
        plane.start()
    except BinariesMissingError as e:
        failure = f"{e}\n(fix: `make k8s-bin`)"
    except DevClusterError as e:
        failure = f"control plane did not start: {e}"
    if failure:
        pytest.fail(failure, pytrace=False)
    return plane


@pytest.fixture(scope="module")
def gitops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitOps]:
    try:
        dist = find_flux()
    except FluxMissingError as e:
        pytest.fail(str(e), pytrace=False)
    tmp = tmp_path_factory.mktemp("gitops")
    with contextlib.ExitStack() as stack:  # stopped in reverse: operator, Flux, git, API server
        plane = start_plane(tmp / "control-plane")
        stack.callback(plane.stop)
        repo = GitRepo.create(tmp / "work", tmp / "srv" / "prfaas-operator.git")
        repo.commit("prfaas-operator manifests", {"manifests": ROOT / "manifests"})
        server = stack.enter_context(GitServer(tmp / "srv", tmp / "git-server.log"))
        # A dependency being reconciled is not Ready: look again soon, not after Flux's 30 s.
        flux = stack.enter_context(Flux(plane, tmp / "flux", dist, requeue_dependency="2s"))
        apply(plane.kubeconfig, *flux_resources(server.url("prfaas-operator.git")))
        audit = AuditLog(tmp / "control-plane" / "audit.log")
        env = GitOps(plane, plane.kubeconfig, repo, flux, audit)
        env.applied(*KUSTOMIZATIONS, timeout=180)
        # The operator as its Deployment would run it: those args, that ServiceAccount's token.
        deploy = get_json(plane.kubeconfig, "deployment", "prfaas-operator", "-n", "prfaas-system")
        args = tuple(deploy["spec"]["template"]["spec"]["containers"][0]["args"])
        token = plane.kubeconfig_for_serviceaccount("prfaas-system", "prfaas-operator")
        env.operator = OperatorProcess(token, tmp / "operator.log", command=args).start()
        stack.callback(env.operator.stop)
        yield env


def operator_planned(env: GitOps) -> dict[str, Any]:
    """The PDCluster once the operator has planned its current generation."""

    def planned() -> dict[str, Any] | None:
        obj = env.pdcluster()
        status = obj.get("status") or {}
        fresh = status.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if fresh and status.get("plan") else None

    try:
        found: dict[str, Any] = wait_for("the operator's plan", planned, timeout=120)
    except AssertionError as e:
        log = env.operator.log()[-3000:] if env.operator else "(not started)"
        raise AssertionError(f"{e}\noperator log:\n{log}") from None
    return found


def at_plan(env: GitOps) -> dict[str, Any]:
    """The PDCluster once both scale targets are at its plan."""

    def done() -> dict[str, Any] | None:
        obj = operator_planned(env)
        plan = obj["status"]["plan"]
        sizes = tuple(replicas(env.admin, NS, t) for t in TARGETS)
        return obj if sizes == (plan["nPrefill"], plan["nDecode"]) else None

    # generous: on a loaded machine an operator pass can time out on the API server and retry
    found: dict[str, Any] = wait_for("the targets at the plan", done, timeout=180)
    return found


# ---- the pipeline --------------------------------------------------------------------------------


def test_python_and_build_script_agree_on_the_flux_dir() -> None:
    printed = subprocess.run(
        [str(ROOT / "hack" / "build-flux.sh"), "--print-dir"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(printed) == default_flux_dir()


def test_flux_installs_crds_operator_and_case_study(gitops: GitOps) -> None:
    env = gitops
    for name in KUSTOMIZATIONS:  # every step applied the first commit
        ks = env.kustomization(name)
        assert ks["status"]["lastAppliedRevision"] == env.revision()
    for crd in ("pdclusters.prfaas.io", "prefillpools.prfaas.io"):
        assert condition(get_json(env.admin, "crd", crd), "Established")["status"] == "True"
    owned = {  # object -> the Kustomization that applied it (Flux labels what it manages)
        ("clusterrole", "prfaas-operator", ""): "prfaas-operator",
        ("serviceaccount", "prfaas-operator", "prfaas-system"): "prfaas-operator",
        ("deployment", "prfaas-operator", "prfaas-system"): "prfaas-operator",
        ("prefillpools.prfaas.io", "h200-pool", NS): "prfaas-samples",
        ("pdclusters.prfaas.io", "h20-pd", NS): "prfaas-samples",
        ("deployment", "h20-prefill", NS): "prfaas-engines",
        ("deployment", "h20-decode", NS): "prfaas-engines",
        ("deployment", "h200-prefill", NS): "prfaas-engines",
    }
    for (kind, name, ns), ks_name in owned.items():
        obj = get_json(env.admin, kind, name, *(["-n", ns] if ns else []))
        labels = obj["metadata"].get("labels", {})
        assert labels.get("kustomize.toolkit.fluxcd.io/name") == ks_name, (kind, name, labels)
    # Replicas of the operator's targets are not Flux's: its applied fields do not hold them.
    for target in TARGETS:
        obj = get_json(env.admin, "deployment", target, "-n", NS, "--show-managed-fields")
        flux_fields = [
            m["fieldsV1"]
            for m in obj["metadata"]["managedFields"]
            if m["manager"] == "kustomize-controller" and m["operation"] == "Apply"
        ]
        assert flux_fields and "f:replicas" not in flux_fields[0]["f:spec"], flux_fields
    # ...and the operator, running as the ServiceAccount Flux created, plans the case study.
    plan = operator_planned(env)["status"]["plan"]
    assert (plan["nPrfaas"], plan["nPrefill"], plan["nDecode"]) == (4, 3, 5)
    assert plan["thresholdTokens"] == 19400


def test_spec_commit_reaches_the_cluster_and_the_operator_replans(gitops: GitOps) -> None:
    env = gitops
    before = operator_planned(env)
    sha = env.edit(
        {
            PDC_FILE: [
                ("link: {capacityGbps: 100,", "link: {capacityGbps: 10,"),  # the link shrinks
                ("intervalSeconds: 60", "intervalSeconds: 2"),  # test speed
                ("cooldownSeconds: 300", "cooldownSeconds: 0"),
            ]
        }
    )
    env.applied("prfaas-samples")
    obj = env.pdcluster()
    assert obj["spec"]["prefillPools"][0]["link"]["capacityGbps"] == 10
    assert obj["metadata"]["generation"] > before["metadata"]["generation"]
    after = operator_planned(env)  # the new generation planned
    t0, t1 = before["status"]["plan"]["thresholdTokens"], after["status"]["plan"]["thresholdTokens"]
    assert t1 > t0, f"a 10 Gbps link should push the threshold up: {t0} -> {t1}"
    assert after["status"]["plan"]["egressGbps"] <= 10.0
    obj = at_plan(env)  # and the operator moved the targets to it
    assert obj["status"]["plan"]["thresholdTokens"] == t1
    assert env.kustomization("prfaas-samples")["status"]["lastAppliedRevision"].endswith(sha)


def stage_bounds(target: str, low: int) -> str:
    """The sample's replica bounds of the stage whose endpoints name ``target``."""
    return f"replicas: {{min: {low}, max: 7}}\n    endpoints: {{service: {target}}}"


def test_invalid_cr_is_rejected_and_the_previous_state_stays(gitops: GitOps) -> None:
    env = gitops
    good = env.revision()
    env.applied("prfaas-samples")
    before = env.pdcluster()
    pool_before = get_json(env.admin, "prefillpools.prfaas.io", "h200-pool", "-n", NS)
    # One commit: a valid change to the PrefillPool and a PDCluster its CRD's CEL rule rejects
    # (prefill.replicas.min + decode.replicas.min = 4 + 5 > instances = 8).
    bad = env.edit(
        {
            "manifests/samples/prefillpool-h200.yaml": [
                ("replicas: {min: 1, max: 8}", "replicas: {min: 1, max: 6}")
            ],
            PDC_FILE: [
                (stage_bounds("h20-prefill", 1), stage_bounds("h20-prefill", 4)),
                (stage_bounds("h20-decode", 1), stage_bounds("h20-decode", 5)),
            ],
        }
    )

    def rejected() -> dict[str, Any] | None:
        ks = env.kustomization("prfaas-samples")
        ready = condition(ks, "Ready") or {}
        attempted = ks["status"].get("lastAttemptedRevision", "")
        return ready if attempted.endswith(bad) and ready.get("status") == "False" else None

    ready = wait_for("Flux to report the rejection", rejected, timeout=60)
    assert "must not exceed instances" in ready["message"], ready
    ks = env.kustomization("prfaas-samples")
    assert ks["status"]["lastAppliedRevision"] == good  # nothing of the bad commit applied
    time.sleep(KS_INTERVAL_S + 2)  # a retry changes nothing either
    after = env.pdcluster()
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    pool_after = get_json(env.admin, "prefillpools.prfaas.io", "h200-pool", "-n", NS)
    assert pool_after["spec"] == pool_before["spec"]  # the valid half of the commit neither
    assert condition(after, "Ready")["status"] == "True"  # the operator keeps planning
    # Fixing it in Git (a revert, as one would) heals the pipeline.
    env.repo.revert()
    env.applied("prfaas-samples")
    assert env.pdcluster()["spec"] == before["spec"]


def test_a_hand_edit_is_reverted(gitops: GitOps) -> None:
    env = gitops
    env.applied(*KUSTOMIZATIONS)
    assert env.pdcluster()["spec"]["policy"]["maxStep"] == 2
    role = get_json(env.admin, "clusterrole", "prfaas-operator")
    edited_at = time.time()
    kubectl(
        env.admin,
        "patch",
        "pdclusters.prfaas.io",
        "h20-pd",
        "-n",
        NS,
        "--type=merge",
        "-p",
        '{"spec":{"policy":{"maxStep":1}}}',
    )
    secrets = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}
    wider = [*copy.deepcopy(role["rules"]), secrets]
    kubectl(
        env.admin,
        "patch",
        "clusterrole",
        "prfaas-operator",
        "--type=merge",
        "-p",
        yaml.safe_dump({"rules": wider}),
    )
    assert env.pdcluster()["spec"]["policy"]["maxStep"] == 1  # the edits took

    wait_for(
        "Flux to revert maxStep",
        lambda: env.pdcluster()["spec"]["policy"]["maxStep"] == 2,
        timeout=4 * KS_INTERVAL_S + 20,
    )
    wait_for(
        "Flux to revert the ClusterRole",
        lambda: get_json(env.admin, "clusterrole", "prfaas-operator")["rules"] == role["rules"],
        timeout=4 * KS_INTERVAL_S + 20,
    )
    reverts = env.audit.writes(edited_at, user=FLUX, names=("h20-pd", "prfaas-operator"))
    assert {(w.resource, w.name) for w in reverts} == {
        ("pdclusters", "h20-pd"),
        ("clusterroles", "prfaas-operator"),
    }, AuditLog.summary(reverts)


def reconciles(env: GitOps, count: int) -> tuple[float, float]:
    """A window in which Flux reconciled the samples and the engines ``count`` times each
    (counted by its dry-run applies of the PDCluster and of a scale target)."""
    start = time.time()

    def enough() -> bool:
        return all(
            len(env.audit.writes(start, user=FLUX, names=(name,), dry_run=True)) >= count
            for name in ("h20-pd", TARGETS[0])
        )

    wait_for(f"{count} Flux reconciles", enough, timeout=4 * count * KS_INTERVAL_S + 30, every=1)
    return start, time.time()


def test_flux_and_the_operator_do_not_fight(gitops: GitOps) -> None:
    env = gitops
    env.applied(*KUSTOMIZATIONS)
    plan = at_plan(env)["status"]["plan"]
    start, end = reconciles(env, STEADY_RECONCILES)
    summary = AuditLog.summary(env.audit.writes(start, end, dry_run=None))
    assert not env.audit.writes(start, end, user=FLUX), f"Flux wrote in a steady state:\n{summary}"
    scale_writes = env.audit.writes(start, end, user=OPERATOR, resource="deployments")
    assert not scale_writes, f"the operator rescaled in a steady state:\n{summary}"
    status_writes = env.audit.writes(start, end, user=OPERATOR, resource="pdclusters/status")
    assert len(status_writes) >= 3, f"the operator stopped its passes:\n{summary}"
    assert tuple(replicas(env.admin, NS, t) for t in TARGETS) == (plan["nPrefill"], plan["nDecode"])
    # Over the whole run: Flux wrote each scale target once (the create), never its replicas.
    creates = env.audit.writes(user=FLUX, names=TARGETS, resource="deployments")
    assert sorted(w.name for w in creates) == sorted(TARGETS), AuditLog.summary(creates)
    scaled = env.audit.writes(user=OPERATOR, names=TARGETS, resource="deployments/scale")
    assert scaled and min(w.at for w in scaled) > max(w.at for w in creates)


def test_replicas_in_git_win_over_the_plan_unless_ignored(gitops: GitOps) -> None:
    """The control experiment. With replicas in Git, Flux writes them (the same audit-log count
    sees it) and the operator stands down (``ScaleContested``): no flapping, but the plan is not
    applied. Flux's ``spec.ignore`` on ``/spec/replicas`` (the documented alternative) and a new
    PDCluster generation hand the replicas back to the operator, and Flux leaves them alone."""
    env = gitops
    at_plan(env)
    start = time.time()
    env.edit(  # someone puts replicas into Git
        {
            ENGINES_FILE: [
                (
                    "      - op: remove\n        path: /spec/replicas",
                    "      - op: replace\n        path: /spec/replicas\n        value: 1",
                )
            ]
        }
    )
    env.applied("prfaas-engines")
    wait_for(
        "the operator to stand down",
        lambda: (
            (condition(env.pdcluster(), "ScaleContested") or {}).get("reason") == "AnotherWriter"
        ),
        timeout=60,
    )
    flux = env.audit.writes(start, user=FLUX, names=TARGETS)
    assert sorted(w.name for w in flux) == sorted(TARGETS), AuditLog.summary(flux)
    window = reconciles(env, STEADY_RECONCILES)
    summary = AuditLog.summary(env.audit.writes(*window, dry_run=None))
    assert not env.audit.writes(*window, user=FLUX, names=TARGETS), summary
    assert not env.audit.writes(*window, user=OPERATOR, resource="deployments"), summary
    assert tuple(replicas(env.admin, NS, t) for t in TARGETS) == (1, 1)  # Git's, not the plan

    # The ignore rule, as the README documents it; then any new generation of the PDCluster.
    ignore = [
        {
            "paths": ["/spec/replicas"],
            "target": {"group": "apps", "kind": "Deployment", "name": "h20-prefill|h20-decode"},
        }
    ]
    patch = yaml.safe_dump({"spec": {"ignore": ignore}})
    kubectl(
        env.admin,
        *("patch", "kustomizations.kustomize.toolkit.fluxcd.io", "prfaas-engines"),
        *("-n", FLUX_NS, "--type=merge", "-p", patch),
    )
    env.applied("prfaas-engines")  # reconciled with the rule
    sha = env.edit({PDC_FILE: [("maxStep: 2", "maxStep: 3")]})
    env.applied(*KUSTOMIZATIONS)
    obj = at_plan(env)
    assert condition(obj, "ScaleContested")["status"] == "False"
    start, end = reconciles(env, STEADY_RECONCILES)
    summary = AuditLog.summary(env.audit.writes(start, end, dry_run=None))
    assert not env.audit.writes(start, end, user=FLUX, names=TARGETS), summary
    assert not env.audit.writes(start, end, user=OPERATOR, resource="deployments"), summary
    plan = env.pdcluster()["status"]["plan"]
    assert tuple(replicas(env.admin, NS, t) for t in TARGETS) == (plan["nPrefill"], plan["nDecode"])
    assert env.kustomization("prfaas-engines")["status"]["lastAppliedRevision"].endswith(sha)
