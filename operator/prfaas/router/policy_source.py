"""Where the router gets the slow loop's policy: a file, or its PDCluster's status.

Both deliver ``RoutingPolicy`` objects to a callback; a policy that cannot be parsed is logged
and skipped (the router keeps running the last good one). The Kubernetes source needs only
get/list/watch on ``pdclusters`` in one namespace.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from prfaas.routing.policy import PolicyError, RoutingPolicy

log = logging.getLogger("prfaas.router")
Sink = Callable[[RoutingPolicy], None]


def policy_from_document(doc: Any, source: str) -> RoutingPolicy:
    """A ``status.routingPolicy`` object, or anything holding one (a PDCluster, its status)."""
    if not isinstance(doc, Mapping):
        raise PolicyError(f"{source}: expected an object")
    if "status" in doc and isinstance(doc["status"], Mapping):
        doc = doc["status"]
    if "routingPolicy" in doc:
        doc = doc["routingPolicy"]
    if not isinstance(doc, Mapping):
        raise PolicyError(f"{source}: routingPolicy must be an object")
    try:
        return RoutingPolicy.from_status(doc)
    except PolicyError as exc:
        raise PolicyError(f"{source}: {exc}") from None


def read_policy_file(path: Path) -> RoutingPolicy:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
    return policy_from_document(doc, str(path))


async def watch_file(path: Path, sink: Sink, every_s: float = 1.0) -> None:
    """Re-read the file whenever its mtime or size changes (ConfigMap volumes swap symlinks)."""
    seen: tuple[float, int] | None = None
    while True:
        try:
            st = path.stat()
            stamp = (st.st_mtime, st.st_size)
        except OSError:
            stamp = None
        if stamp is not None and stamp != seen:
            seen = stamp
            try:
                sink(read_policy_file(path))
            except PolicyError as exc:
                log.error("ignoring policy: %s", exc)
        await asyncio.sleep(every_s)


class KubeSource:
    """Watch one PDCluster and deliver its ``status.routingPolicy`` on every change."""

    def __init__(self, name: str, namespace: str, kubeconfig: str | None = None) -> None:
        self.name = name
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self._stop = threading.Event()

    def _api(self) -> Any:
        from kubernetes import client, config

        if self.kubeconfig:
            config.load_kube_config(config_file=self.kubeconfig)  # type: ignore[no-untyped-call]
        else:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
        return client.CustomObjectsApi()

    async def run(self, sink: Sink) -> None:
        loop = asyncio.get_running_loop()

        def deliver(obj: Mapping[str, Any]) -> None:
            status = obj.get("status") or {}
            if "routingPolicy" not in status:
                return  # not planned yet
            try:
                policy = policy_from_document(status, f"{self.namespace}/{self.name}")
            except PolicyError as exc:
                log.error("ignoring policy: %s", exc)
                return
            loop.call_soon_threadsafe(sink, policy)

        thread = threading.Thread(target=self._loop, args=(deliver,), daemon=True)
        thread.start()
        try:
            await asyncio.Event().wait()
        finally:
            self._stop.set()

    def _loop(self, deliver: Callable[[Mapping[str, Any]], None]) -> None:
        # imported here: a router reading a policy file needs neither
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        from prfaas.api.pdcluster import PDCluster

        pdc = PDCluster.resource
        api = None
        while not self._stop.is_set():
            try:
                api = api or self._api()
                w = watch.Watch()  # type: ignore[no-untyped-call]
                for event in w.stream(  # type: ignore[no-untyped-call]
                    api.list_namespaced_custom_object,
                    pdc.group,
                    pdc.version,
                    self.namespace,
                    pdc.plural,
                    field_selector=f"metadata.name={self.name}",
                    timeout_seconds=60,
                ):
                    if self._stop.is_set():
                        w.stop()  # type: ignore[no-untyped-call]
                        return
                    if event["type"] in ("ADDED", "MODIFIED"):
                        deliver(event["object"])
            except ApiException as exc:
                log.error("watching PDCluster %s/%s: %s %s", self.namespace, self.name,
                          exc.status, exc.reason)  # fmt: skip
                self._stop.wait(5)
            except Exception as exc:  # network errors of every kind: retry, never die
                log.error("watching PDCluster %s/%s: %s", self.namespace, self.name, exc)
                self._stop.wait(5)
