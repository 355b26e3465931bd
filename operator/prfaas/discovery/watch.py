"""One selection of EndpointSlices kept current on a thread: list, then watch from the list's
resourceVersion; a watch that expires (410) or breaks is followed by a fresh list. Needs only
``list`` and ``watch`` on ``endpointslices`` in the namespace.

Readers see ``ready`` (the engines that take new requests; None until the first list) and
``generation`` (bumped whenever ``ready`` changes); ``on_change`` is called, on the watch's
thread, with every new ``ready``. When the API server cannot be reached the last list holds
(``error`` says why): engines do not vanish because their API server is briefly away.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from prfaas.discovery.slices import ready_urls

log = logging.getLogger("prfaas.discovery")
Sink = Callable[[tuple[str, ...]], None]
CONNECT_S = 3.0
WATCH_S = 30  # the server ends each watch after this; a stopped watch's thread exits by then
RETRY_S = (0.5, 10.0)  # backoff after an error: first, longest


class _ExpiredError(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class SliceWatch:
    def __init__(
        self,
        api: Any,  # kubernetes.client.ApiClient
        namespace: str,
        label_selector: str,
        port: str | None = None,
        scheme: str = "http",
        on_change: Sink | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.label_selector = label_selector
        self.port = port
        self.scheme = scheme
        self.on_change = on_change
        self.ready: tuple[str, ...] | None = None
        self.generation = 0
        self.error: str | None = None
        self._slices: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"slices {self}", daemon=True)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.label_selector}"

    def start(self) -> SliceWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def wait_synced(self, timeout: float) -> bool:
        """Block until the first list arrived (True) or ``timeout`` passed (False)."""
        return self._synced.wait(timeout)

    # -- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        delay = RETRY_S[0]
        while not self._stop.is_set():
            try:
                version = self._list()
                delay = RETRY_S[0]
                while not self._stop.is_set():
                    version = self._watch(version)
            except _ExpiredError:
                continue
            except ApiException as exc:
                self._failed(f"HTTP {exc.status} {exc.reason}")
            except Exception as exc:  # network errors of every kind: retry, never die
                self._failed(f"{type(exc).__name__}: {exc}")
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_S[1])

    def _failed(self, why: str) -> None:
        if why != self.error:
            log.warning("EndpointSlices %s: %s (keeping the last list)", self, why)
        self.error = why

    def _discovery(self) -> Any:
        from kubernetes import client

        return client.DiscoveryV1Api(self.api)

    def _list(self) -> str:
        resp = self._discovery().list_namespaced_endpoint_slice(
            self.namespace,
            label_selector=self.label_selector,
            _preload_content=False,
            _request_timeout=(CONNECT_S, 30.0),
        )
        doc = json.loads(resp.data)
        self._slices = {
            s["metadata"]["name"]: s for s in doc.get("items") or [] if isinstance(s, dict)
        }
        if self.error is not None:
            log.info("EndpointSlices %s: listed again", self)
        self.error = None
        self._changed()
        self._synced.set()
        return str(doc["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        w = watch.Watch()  # type: ignore[no-untyped-call]
        try:
            for event in w.stream(  # type: ignore[no-untyped-call]
                self._discovery().list_namespaced_endpoint_slice,
                self.namespace,
                label_selector=self.label_selector,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_S,
                _request_timeout=(CONNECT_S, WATCH_S + 10),
                deserialize=False,
            ):
                if self._stop.is_set():
                    break
                version = self._apply(event, version)
        except ApiException as exc:
            if exc.status == 410:
                raise _ExpiredError from None
            raise
        return version

    def _apply(self, event: dict[str, Any], version: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        meta = obj.get("metadata") or {}
        version = str(meta.get("resourceVersion") or version)
        name = meta.get("name")
        if kind in ("ADDED", "MODIFIED") and name:
            self._slices[name] = obj
        elif kind == "DELETED" and name:
            self._slices.pop(name, None)
        else:
            return version  # BOOKMARK: only the resourceVersion moves
        self._changed()
        return version

    def _changed(self) -> None:
        ready = ready_urls(self._slices.values(), self.port, self.scheme)
        if ready == self.ready:
            return
        self.ready = ready
        self.generation += 1
        log.debug("EndpointSlices %s: %d ready", self, len(ready))
        if self.on_change is not None:
            try:
                self.on_change(ready)
            except Exception:  # a sink's bug must not stop the watch
                log.exception("EndpointSlices %s: delivering the change failed", self)


def api_client(kubeconfig: str | None = None) -> Any:
    """A ``kubernetes.client.ApiClient``: from ``kubeconfig``, else in-cluster, else the default
    kubeconfig (``$KUBECONFIG``, ``~/.kube/config``). Raises ``ConfigException`` without any."""
    from kubernetes import client, config

    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        return config.new_client_from_config()  # type: ignore[no-untyped-call]
    return client.ApiClient(cfg)
