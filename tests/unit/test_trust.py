"""What the platform decides for CR authors: member kubeconfigs, target namespaces, Prometheus."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from prfaas.controller.kubeconfig import KubeconfigRefusedError, parse_kubeconfig
from prfaas.controller.signals import describe_failure
from prfaas.controller.trust import Trust


def kubeconfig(user: dict[str, Any], cluster: dict[str, Any] | None = None) -> bytes:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    return yaml.safe_dump(doc).encode()


def test_inline_credentials_are_accepted() -> None:
    doc = parse_kubeconfig(kubeconfig({"token": "abc", "client-certificate-data": "Zm9v"}))
    assert doc["users"][0]["user"]["token"] == "abc"


@pytest.mark.parametrize(
    ("user", "cluster", "where"),
    [
        ({"exec": {"command": "sh"}}, None, "users[0].user.exec"),
        ({"auth-provider": {"name": "oidc"}}, None, "users[0].user.auth-provider"),
        ({"tokenFile": "/var/run/secrets/token"}, None, "users[0].user.tokenFile"),
        ({"client-key": "/etc/key.pem"}, None, "users[0].user.client-key"),
        ({"token": "x"}, {"server": "https://h", "certificate-authority": "/ca"}, "clusters[0]"),
    ],
)
def test_plugins_and_file_references_are_refused_naming_the_field(
    user: dict[str, Any], cluster: dict[str, Any] | None, where: str
) -> None:
    with pytest.raises(KubeconfigRefusedError) as err:
        parse_kubeconfig(kubeconfig(user, cluster))
    assert where in str(err.value)
    assert "/var/run" not in str(err.value) and "/etc/key" not in str(err.value)


def test_exec_only_with_the_operator_flag() -> None:
    raw = kubeconfig({"exec": {"command": "aws"}})
    assert parse_kubeconfig(raw, allow_exec=True)["users"][0]["user"]["exec"]
    with pytest.raises(KubeconfigRefusedError, match="auth-provider"):
        parse_kubeconfig(kubeconfig({"auth-provider": {"name": "gcp"}}), allow_exec=True)


@pytest.mark.parametrize("raw", [b"{unclosed", b"- a list", b"users: 3", b"users: [{user: 1}]"])
def test_malformed_kubeconfigs_are_refused_not_crashed(raw: bytes) -> None:
    with pytest.raises(KubeconfigRefusedError):
        parse_kubeconfig(raw)


def test_target_namespaces() -> None:
    trust = Trust(target_namespaces=frozenset({"shared"}))
    assert trust.target_refusal("team", None) is None
    assert trust.target_refusal("team", "team") is None
    assert trust.target_refusal("team", "shared") is None
    refusal = trust.target_refusal("team", "victim")
    assert refusal is not None and "victim" in refusal


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://prom.monitoring:9090", True),
        ("http://prom.monitoring:9090/", True),
        ("http://prom.monitoring:9090/sub/path", True),  # under the allowed path
        ("http://prom.monitoring:9091", False),
        ("https://prom.monitoring:9090", False),
        ("http://evil@prom.monitoring:9090", False),
        ("http://prom.monitoring:9090?x=1", False),
        ("http://thanos:10902/tenant-a/api", True),
        ("http://thanos:10902/tenant-ab", False),
    ],
)
def test_prometheus_urls_match_by_scheme_host_port_and_path(url: str, ok: bool) -> None:
    trust = Trust(prometheus_urls=("http://prom.monitoring:9090", "http://thanos:10902/tenant-a"))
    assert (trust.prometheus_refusal(url) is None) is ok


def test_no_prometheus_is_allowed_by_default() -> None:
    refusal = Trust().prometheus_refusal("http://prom:9090")
    assert refusal is not None and "--allow-prometheus" in refusal


def test_a_failing_answer_is_described_without_its_body() -> None:
    exc = RuntimeError("HTTP Status Code 500 (b'TOPSECRET body')")
    assert describe_failure(exc) == "HTTP 500"
    assert describe_failure(ConnectionRefusedError("secret detail")) == (
        "cannot connect (ConnectionRefusedError)"
    )
