"""The dev control plane is a real one: storage, authentication, RBAC, TokenRequest, isolation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from prfaas_dev.cluster import (
    K8S_VERSION,
    ControlPlane,
    DevClusterError,
    default_bin_dir,
    find_binaries,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def api(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture
def admin(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with api(control_plane.kubeconfig) as c:
        yield c


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """RBAC changes reach the authorizer through an informer: allow a moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_admin_creates_a_namespace(control_plane: ControlPlane, admin: client.ApiClient) -> None:
    name = unique("created")
    core = client.CoreV1Api(admin)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    assert core.read_namespace(name).metadata.uid
    assert name in {ns.metadata.name for ns in core.list_namespace().items}
    # the version stamped at build time is what the server (and helm) see
    assert client.VersionApi(admin).get_code().git_version == f"v{K8S_VERSION}"


def test_user_without_grants_is_forbidden(control_plane: ControlPlane) -> None:
    kubeconfig = control_plane.kubeconfig_for_user(unique("nobody"), ["some-team"])
    with api(kubeconfig) as c, pytest.raises(ApiException) as err:
        client.CoreV1Api(c).list_namespace()
    assert err.value.status == 403


def test_rbac_grant_lets_the_user_list_namespaces(
    control_plane: ControlPlane, admin: client.ApiClient
) -> None:
    user = unique("alice")
    with api(control_plane.kubeconfig_for_user(user)) as c:
        core = client.CoreV1Api(c)
        with pytest.raises(ApiException) as err:
            core.list_namespace()
        assert err.value.status == 403

        rbac = client.RbacAuthorizationV1Api(admin)
        role = unique("ns-reader")
        rbac.create_cluster_role(
            client.V1ClusterRole(
                metadata=client.V1ObjectMeta(name=role),
                rules=[
                    client.V1PolicyRule(api_groups=[""], resources=["namespaces"], verbs=["list"])
                ],
            )
        )
        rbac.create_cluster_role_binding(
            client.V1ClusterRoleBinding(
                metadata=client.V1ObjectMeta(name=role),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role
                ),
                subjects=[
                    client.RbacV1Subject(
                        kind="User", name=user, api_group="rbac.authorization.k8s.io"
                    )
                ],
            )
        )
        names = eventually(lambda: {ns.metadata.name for ns in core.list_namespace().items})
        assert "default" in names
        with pytest.raises(ApiException) as err:  # only what was granted
            core.delete_namespace("default")
        assert err.value.status == 403


def whoami(kubeconfig: Path) -> tuple[str, list[str]]:
    with api(kubeconfig) as c:
        review = client.AuthenticationV1Api(c).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
    info = review.status.user_info
    return info.username, info.groups


def test_service_account_identities(control_plane: ControlPlane, admin: client.ApiClient) -> None:
    ns = unique("ops")
    core = client.CoreV1Api(admin)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    core.create_namespaced_service_account(
        ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="operator"))
    )
    sa = f"system:serviceaccount:{ns}:operator"

    user, groups = whoami(control_plane.kubeconfig_for_serviceaccount(ns, "operator"))
    assert user == sa  # a real bound token from the TokenRequest API
    assert {"system:serviceaccounts", f"system:serviceaccounts:{ns}"} <= set(groups)

    user, groups = whoami(control_plane.kubeconfig_for_user(sa))
    assert user == sa  # a client cert carrying the same identity
    assert {"system:serviceaccounts", f"system:serviceaccounts:{ns}"} <= set(groups)


def test_two_control_planes_are_independent(
    control_plane: ControlPlane,
    control_plane_factory: Callable[[], ControlPlane],
    admin: client.ApiClient,
) -> None:
    other = control_plane_factory()
    assert other.server != control_plane.server
    name = unique("only-in-first")
    client.CoreV1Api(admin).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
    )
    with api(other.kubeconfig) as c:
        core = client.CoreV1Api(c)
        with pytest.raises(ApiException) as err:
            core.read_namespace(name)
        assert err.value.status == 404
        assert "default" in {ns.metadata.name for ns in core.list_namespace().items}
    # certificates are per plane: the first plane's admin is a stranger to the second
    foreign = other.kubeconfig.read_text().replace(
        other.server, control_plane.server
    )  # right server, wrong CA and client cert
    path = other.state_dir / "foreign.kubeconfig" if other.state_dir else None
    assert path is not None
    path.write_text(foreign)
    with api(path) as c, pytest.raises(Exception):  # noqa: B017 - TLS or 401, either refuses
        client.CoreV1Api(c).list_namespace(_request_timeout=5)


def test_kubectl_and_helm_are_the_built_versions(control_plane: ControlPlane) -> None:
    out = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert out["clientVersion"]["gitVersion"] == f"v{K8S_VERSION}"
    assert out["serverVersion"]["gitVersion"] == f"v{K8S_VERSION}"
    helm = find_binaries()["kubectl"].parent / "helm"
    if os.environ.get("KUBEBUILDER_ASSETS") is None:  # helm lives in the build cache
        assert helm.exists(), "helm missing from the build cache: run `make k8s-bin`"
        short = subprocess.run(
            [str(helm), "version", "--short"], capture_output=True, text=True, check=True
        )
        assert short.stdout.startswith("v3.")


def test_python_and_build_script_agree_on_the_bin_dir() -> None:
    printed = subprocess.run(
        [str(REPO / "hack" / "build-k8s.sh"), "--print-dir"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(printed) == default_bin_dir()


def test_start_failure_reports_the_log_tail(tmp_path: Path) -> None:
    plane = ControlPlane(state_dir=tmp_path, extra_apiserver_args=["--no-such-flag=1"])
    with pytest.raises(DevClusterError, match="no-such-flag"):
        plane.start()
    assert not plane.running()


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_cli_up_and_down_leave_nothing_running(tmp_path: Path) -> None:
    state, kubeconfig = tmp_path / "cluster", tmp_path / "kubeconfig"
    cli = [sys.executable, "-m", "prfaas_dev.cluster"]
    up = subprocess.run(
        [*cli, "up", "--state-dir", str(state), "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert up.stdout.strip().splitlines()[-1] == f"export KUBECONFIG={kubeconfig}"
    pids = [p["pid"] for p in json.loads((state / "state.json").read_text())["processes"]]
    try:
        with api(kubeconfig) as c:  # the CLI has exited; the control plane keeps serving
            assert client.CoreV1Api(c).list_namespace().items
        again = subprocess.run(
            [*cli, "up", "--state-dir", str(state), "--kubeconfig", str(kubeconfig)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "already running" in again.stdout
    finally:
        down = subprocess.run(
            [*cli, "down", "--state-dir", str(state), "--kubeconfig", str(kubeconfig)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [pid for pid in pids if running(pid)]
    assert not (state / "state.json").exists()
    assert not kubeconfig.exists()
