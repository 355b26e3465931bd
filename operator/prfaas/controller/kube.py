"""Kubernetes access for the slow loop: the ``/scale`` of any target, CR status, member clusters.

Uses the official client (sync; callers run it in a thread). Kind → plural comes from API
discovery, cached per process, so any kind with a ``/scale`` subresource works.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from prfaas.api.common import Placement, ScaleTargetRef
from prfaas.api.resource import GROUP, VERSION
from prfaas.controller.kubeconfig import KubeconfigRefusedError, parse_kubeconfig

FIELD_MANAGER = "prfaas-operator"  # in managedFields: GitOps tools and kubectl see who wrote
TIMEOUT = (3.0, 10.0)  # connect, read: a member cluster that does not answer is unreachable


class UnreachableError(Exception):
    """A cluster did not answer (network, TLS, credentials): act as if it is not there."""


class KubeconfigRejectedError(UnreachableError):
    """A member kubeconfig that asks for what the operator refuses (exec, file references)."""


class TargetError(Exception):
    """The cluster answered, but the target is wrong (missing, no /scale, forbidden)."""


def _describe(exc: Exception) -> str:
    """What went wrong, without the exception's text: a member's kubeconfig comes from a CR
    author, and transport errors can quote request headers (its credentials)."""
    reason = getattr(exc, "reason", None)  # urllib3's MaxRetryError wraps the cause
    cause = reason if isinstance(reason, Exception) else exc
    name = type(cause).__name__
    if "Timeout" in name or isinstance(cause, TimeoutError):
        return f"timed out ({name})"
    if "SSL" in name or "Certificate" in name:
        return f"TLS failed ({name})"
    if "Connection" in name or isinstance(cause, OSError):
        return f"cannot connect ({name})"
    return name


def _split(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


@dataclass
class Cluster:
    """One API server, with a per-process discovery cache."""

    api: client.ApiClient
    name: str = "local"

    def __post_init__(self) -> None:
        self._plurals: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, _request_timeout=TIMEOUT, **kwargs)
        except ApiException as exc:
            if exc.status in (401, 502, 503, 504) or exc.status == 0:
                raise UnreachableError(f"{self.name}: HTTP {exc.status} {exc.reason}") from None
            raise
        except Exception as exc:  # urllib3 / socket / TLS errors
            raise UnreachableError(f"{self.name}: {_describe(exc)}") from None

    def plural(self, api_version: str, kind: str) -> str:
        key = (api_version, kind)
        with self._lock:
            if key in self._plurals:
                return self._plurals[key]
        group, version = _split(api_version)
        if not group:
            raise TargetError(f"{kind}: core-group kinds are not scale targets here")
        try:
            found = self._call(client.CustomObjectsApi(self.api).get_api_resources, group, version)
        except ApiException as exc:
            raise TargetError(f"{api_version}: discovery failed: HTTP {exc.status}") from None
        for res in found.resources or []:
            if res.kind == kind and "/" not in res.name:
                with self._lock:
                    self._plurals[key] = res.name
                return str(res.name)
        raise TargetError(f"{api_version} has no kind {kind}")

    def get_replicas(self, ref: ScaleTargetRef, namespace: str) -> int:
        return self.get_scale(ref, namespace)[0]

    def get_scale(self, ref: ScaleTargetRef, namespace: str) -> tuple[int, str | None]:
        """``spec.replicas`` of the target's ``/scale`` and its ``status.selector`` (the label
        selector of its pods, as a string; None if the kind publishes none)."""
        group, version = _split(ref.api_version)
        plural = self.plural(ref.api_version, ref.kind)
        api = client.CustomObjectsApi(self.api)
        try:
            scale = self._call(
                api.get_namespaced_custom_object_scale,
                group,
                version,
                ref.namespace or namespace,
                plural,
                ref.name,
            )
        except ApiException as exc:
            raise TargetError(f"{ref.kind}/{ref.name}: HTTP {exc.status} {exc.reason}") from None
        selector = (scale.get("status") or {}).get("selector")
        replicas = int((scale.get("spec") or {}).get("replicas") or 0)
        return replicas, selector if isinstance(selector, str) and selector else None

    def unschedulable_pods(self, namespace: str, selector: str) -> list[str]:
        """Pending pods (of a target's selector) that the scheduler could not place, as
        ``"<pod>: <scheduler's message>"``. Needs ``list`` on pods in the namespace."""
        core = client.CoreV1Api(self.api)
        pods = self._call(
            core.list_namespaced_pod,
            namespace,
            label_selector=selector,
            field_selector="status.phase=Pending",
        )
        out = []
        for pod in pods.items or []:
            for c in (pod.status and pod.status.conditions) or []:
                if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
                    out.append(f"{pod.metadata.name}: {c.message or c.reason}")
        return sorted(out)

    def set_replicas(self, ref: ScaleTargetRef, namespace: str, replicas: int) -> None:
        group, version = _split(ref.api_version)
        plural = self.plural(ref.api_version, ref.kind)
        api = client.CustomObjectsApi(self.api)
        try:
            self._call(
                api.patch_namespaced_custom_object_scale,
                group,
                version,
                ref.namespace or namespace,
                plural,
                ref.name,
                {"spec": {"replicas": replicas}},
                field_manager=FIELD_MANAGER,
            )
        except ApiException as exc:
            raise TargetError(f"{ref.kind}/{ref.name}: HTTP {exc.status} {exc.reason}") from None

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One of our custom resources (``plural``: e.g. ``PrefillPool.resource.plural``)."""
        api = client.CustomObjectsApi(self.api)
        try:
            obj: dict[str, Any] = self._call(
                api.get_namespaced_custom_object, GROUP, VERSION, namespace, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def list_custom(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        """Every one of our custom resources of a kind in ``namespace``."""
        api = client.CustomObjectsApi(self.api)
        found = self._call(api.list_namespaced_custom_object, GROUP, VERSION, namespace, plural)
        items: list[dict[str, Any]] = found.get("items") or []
        return items

    def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        api = client.CustomObjectsApi(self.api)
        self._call(
            api.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            {"status": status},
            field_manager=FIELD_MANAGER,
        )

    def apply_configmap(self, namespace: str, name: str, data: dict[str, str]) -> None:
        core = client.CoreV1Api(self.api)
        body = {
            "metadata": {
                "name": name,
                "labels": {"app.kubernetes.io/managed-by": "prfaas-operator"},
            },
            "data": data,
        }
        try:
            self._call(core.patch_namespaced_config_map, name, namespace, body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self._call(core.create_namespaced_config_map, namespace, body)

    def delete_configmap(self, namespace: str, name: str) -> None:
        try:
            self._call(client.CoreV1Api(self.api).delete_namespaced_config_map, name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise


def local_api(connections: int | None = None) -> client.ApiClient:
    """In-cluster credentials, else the kubeconfig (``KUBECONFIG``); ``connections``: kept
    open at most (default: the client's, 5 per core), as many as threads may call at once."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    conf = client.Configuration.get_default_copy()
    if connections is not None:
        conf.connection_pool_maxsize = connections
    return client.ApiClient(conf)


class Members:
    """Clients for member clusters, from kubeconfig Secrets in the CR's namespace.

    Cached by (namespace, secret, resourceVersion): a rotated Secret gets a new client.
    """

    def __init__(self, local: Cluster, allow_exec: bool = False) -> None:
        self.local = local
        self.allow_exec = allow_exec  # --allow-kubeconfig-exec
        self._cache: dict[tuple[str, str, str], Cluster] = {}
        self._lock = threading.Lock()

    def for_placement(self, placement: Placement, namespace: str) -> Cluster:
        ref = placement.kubeconfig_secret_ref
        if ref is None:
            return self.local
        core = client.CoreV1Api(self.local.api)
        try:
            secret = self.local._call(core.read_namespaced_secret, ref.name, namespace)
        except ApiException as exc:
            raise UnreachableError(
                f"kubeconfig Secret {namespace}/{ref.name}: HTTP {exc.status} {exc.reason}"
            ) from None
        key = (namespace, ref.name, str(secret.metadata.resource_version))
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        raw = (secret.data or {}).get(ref.key)
        if raw is None:
            raise UnreachableError(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
        where = f"Secret {namespace}/{ref.name}[{ref.key}]"
        try:
            kubeconfig = parse_kubeconfig(base64.b64decode(raw), self.allow_exec)
        except KubeconfigRefusedError as exc:
            raise KubeconfigRejectedError(f"{where}: {exc}") from None
        except ValueError:  # not base64
            raise KubeconfigRejectedError(f"{where}: not base64") from None
        try:
            api = config.new_client_from_config_dict(kubeconfig)  # type: ignore[no-untyped-call]
        except Exception as exc:  # never log the secret itself
            raise UnreachableError(
                f"{where} is not a usable kubeconfig ({type(exc).__name__})"
            ) from None
        api.configuration.retries = 1
        member = Cluster(api, name=f"member {ref.name}")
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if k[:2] != key[:2]}
            self._cache[key] = member
        return member
