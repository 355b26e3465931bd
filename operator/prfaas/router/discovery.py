"""Local engines found by the router itself: one EndpointSlice watch per source the running
policy names (``prefillDiscovery``/``decodeDiscovery``), in the router's own cluster, with
``list``/``watch`` on ``endpointslices`` there and nothing else. A watch's news reaches the
fleet on the event loop (``Fleet.set_found``); a source the policy drops is unwatched.

PrefillPools in other datacenters are not watched here: the operator resolves their engines
with the member cluster's credentials and publishes them in the policy.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

from prfaas.discovery.watch import SliceWatch, api_client
from prfaas.router.fleet import Fleet
from prfaas.routing.policy import EndpointSource, RoutingPolicy

log = logging.getLogger("prfaas.router")


class Discovery:
    def __init__(
        self,
        fleet: Fleet,
        loop: asyncio.AbstractEventLoop,
        api_factory: Callable[[], Any] = api_client,
    ) -> None:
        self.fleet = fleet
        self.loop = loop
        self.api_factory = api_factory
        self.watches: dict[EndpointSource, SliceWatch] = {}
        self._api: Any = None

    def follow(self, policy: RoutingPolicy) -> None:
        """Watch exactly the sources ``policy`` names (call it with every policy applied)."""
        wanted = set(policy.sources)
        for source in [s for s in self.watches if s not in wanted]:
            self.watches.pop(source).stop()
        for source in wanted:
            if source not in self.watches and self._connect(source):
                w = SliceWatch(
                    self._api, source.namespace, source.label_selector, source.port, source.scheme
                )
                w.on_change = functools.partial(self._news, source, w)
                self.watches[source] = w.start()

    def stop(self) -> None:
        for w in self.watches.values():
            w.stop()
        self.watches.clear()

    def _connect(self, source: EndpointSource) -> bool:
        if self._api is None:
            try:
                self._api = self.api_factory()
            except Exception as exc:  # no credentials at all: say so, route to what is left
                log.error(
                    "policy names EndpointSlices %s/%s but Kubernetes is not reachable: %s",
                    source.namespace,
                    source.label_selector,
                    exc,
                )
                return False
        return True

    def _news(self, source: EndpointSource, watch: SliceWatch, urls: tuple[str, ...]) -> None:
        """On the watch's thread: hand the news to the event loop."""
        self.loop.call_soon_threadsafe(self._found, source, watch, urls)

    def _found(self, source: EndpointSource, watch: SliceWatch, urls: tuple[str, ...]) -> None:
        if self.watches.get(source) is not watch:
            return  # news from a watch stopped meanwhile
        before = set(self.fleet.found.get(source, ()))
        bad = self.fleet.set_found(source, urls)
        for url, why in bad:
            log.error("EndpointSlices %s: ignoring endpoint %r (%s)", source.label_selector, url,
                      why)  # fmt: skip
        now = set(urls)
        log.info(
            "EndpointSlices %s/%s: %d ready (+%s, -%s)",
            source.namespace,
            source.label_selector,
            len(now),
            sorted(now - before),
            sorted(before - now),
        )
