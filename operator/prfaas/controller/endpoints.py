"""The engines of PrefillPools declared by Service or selector, as the pool's own cluster lists
them (with the member's credentials: routers never need them). One EndpointSlice watch per
(cluster, namespace, selection), shared by every PDCluster that offloads to the pool, started
on first use and stopped when no PDCluster uses it any more.
"""

from __future__ import annotations

import logging
import threading

from prfaas.api.common import Endpoints
from prfaas.controller.kube import Cluster
from prfaas.discovery.watch import SliceWatch

log = logging.getLogger("prfaas.operator")
User = tuple[str, str]  # a PDCluster: (namespace, name)
_Key = tuple[int, str, str, str | None, str]
FIRST_LIST_S = 3.0  # how long a pass waits for a new watch's first list


class PoolEndpoints:
    def __init__(self) -> None:
        self._watches: dict[_Key, tuple[SliceWatch, Cluster]] = {}
        self._users: dict[User, _Key] = {}
        self._lock = threading.Lock()

    def ready(
        self, user: User, cluster: Cluster, namespace: str, endpoints: Endpoints
    ) -> tuple[str, ...] | None:
        """The pool's ready engines for ``user``'s pass (None: not listed yet); from now on
        ``view(user)`` is this watch. A watch started now gets ``FIRST_LIST_S`` for its first
        list, so that a first plan names the engines (later passes never wait)."""
        watch, new = self._watch(user, cluster, namespace, endpoints)
        if new:
            watch.wait_synced(FIRST_LIST_S)
        return watch.ready

    def view(self, user: User) -> SliceWatch | None:
        with self._lock:
            key = self._users.get(user)
            return self._watches[key][0] if key is not None else None

    def release(self, user: User) -> None:
        """``user`` no longer offloads to a pool found this way (changed or deleted)."""
        with self._lock:
            key = self._users.pop(user, None)
            if key is not None:
                self._collect(key)

    def stop(self) -> None:
        with self._lock:
            for watch, _ in self._watches.values():
                watch.stop()
            self._watches.clear()
            self._users.clear()

    def _watch(
        self, user: User, cluster: Cluster, namespace: str, endpoints: Endpoints
    ) -> tuple[SliceWatch, bool]:
        selector = endpoints.label_selector()
        assert selector is not None, "the pool lists fixed URLs"
        scheme = endpoints.scheme or "http"
        # the Cluster object stays referenced below, so its id names it while the watch lives
        key = (id(cluster), namespace, selector, endpoints.port, scheme)
        with self._lock:
            new = key not in self._watches
            if new:
                watch = SliceWatch(cluster.api, namespace, selector, endpoints.port, scheme)
                self._watches[key] = (watch.start(), cluster)
                log.info("watching EndpointSlices %s in %s", watch, cluster.name)
            previous, self._users[user] = self._users.get(user), key
            if previous is not None and previous != key:
                self._collect(previous)
            return self._watches[key][0], new

    def _collect(self, key: _Key) -> None:
        if key not in self._users.values() and key in self._watches:
            watch, cluster = self._watches.pop(key)
            watch.stop()
            log.info("no longer watching EndpointSlices %s in %s", watch, cluster.name)
