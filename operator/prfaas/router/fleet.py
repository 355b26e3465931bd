"""The engines the router may use, as the published policy declares them, and their state.

The policy is the only source of upstream URLs: the router never forwards anywhere else. On a
new policy the routing core (``prfaas.routing.Router.follow``) swaps it in and makes its prefill
instance lists the endpoint lists (the core's instance ``k`` is endpoint ``k``), keeping live
state by endpoint; the fleet copies scraped health and queue depths into the core.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from prfaas.routing.config import ModeThresholds, RoutingConfig
from prfaas.routing.decide import Decision, Target
from prfaas.routing.policy import RoutingPolicy
from prfaas.routing.prefix import PrefixIndex
from prfaas.routing.router import Router
from prfaas.routing.state import TargetState

# Scarce mode only: the P/D hand-off ships prefill→decode KV, not cached prefixes between
# clusters, so abundant mode's "use the best cache anywhere" has no data path here.
HTTP_ROUTING = RoutingConfig(mode=ModeThresholds(cache_transfers=False))


def valid_endpoint(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query


@dataclass(slots=True)
class Engine:
    """One upstream endpoint as the router sees it; ``with engine:`` counts a request in flight
    there for the length of the block."""

    url: str
    healthy: bool = True
    waiting: float = 0.0  # scraped vllm:num_requests_waiting
    running: float = 0.0
    active: int = 0  # requests this router has in flight there
    others: float = 0.0  # requests other clients had there at the last scrape
    fails: int = 0  # scrapes failed in a row
    waits: set[Callable[[], None]] = field(default_factory=set)  # expire() of waits on it

    def __enter__(self) -> Engine:
        self.active += 1
        return self

    def __exit__(self, *_: object) -> None:
        self.active -= 1

    @property
    def load(self) -> float:
        """Requests there: this router's own, counted from the moment it picks the engine (a
        burst spreads before any scrape sees it), plus what others had at the last scrape."""
        return self.active + self.others

    @contextlib.contextmanager
    def watching(self, expire: Callable[[], None]) -> Iterator[None]:
        """A wait on this engine, ended by ``hung()``."""
        self.waits.add(expire)
        try:
            yield
        finally:
            self.waits.discard(expire)

    def hung(self) -> None:
        """Dead or not answering: unhealthy, and every wait on it ends now (fails over)."""
        self.healthy = False
        for expire in list(self.waits):
            expire()


class Fleet:
    def __init__(self, config: RoutingConfig | None = None, link_retry_s: float = 1.0) -> None:
        self.config = config or HTTP_ROUTING
        self.link_retry_s = link_retry_s
        self.policy: RoutingPolicy | None = None  # None: none received yet
        self.core = Router(RoutingPolicy(), 0, {}, self.config, PrefixIndex())
        self.engines: dict[str, Engine] = {}
        self.decode: list[Engine] = []
        self._turn = 0  # ties between decode engines go round

    # -- policy ------------------------------------------------------------------------------
    def apply(self, policy: RoutingPolicy) -> list[str]:
        """Swap in a policy; returns the endpoints it declares that are not valid URLs (dropped)."""
        bad = [u for u in self._urls(policy) if not valid_endpoint(u)]
        policy = _without(policy, set(bad))
        self.core.follow(policy)
        keep = set(self._urls(policy))
        self.engines = {u: e for u, e in self.engines.items() if u in keep}
        for u in keep:
            self.engines.setdefault(u, Engine(u))
        self.decode = [self.engines[u] for u in policy.decode_endpoints]
        self.policy = policy
        self.sync_health()
        return bad

    @staticmethod
    def _urls(policy: RoutingPolicy) -> list[str]:
        urls = [*policy.prefill_endpoints, *policy.decode_endpoints]
        for p in policy.pools:
            urls.extend(p.endpoints)
        return urls

    # -- per request -------------------------------------------------------------------------
    def prefill_url(self, d: Decision) -> str:
        assert self.policy is not None
        if d.target == Target.POOL:
            return self.policy.pools[d.pool].endpoints[d.instance]
        return self.policy.prefill_endpoints[d.instance]

    def has_decode(self) -> bool:
        return any(e.healthy for e in self.decode)

    def pick_decode(self, avoid: Sequence[str] = ()) -> Engine | None:
        """Least loaded healthy decode engine (``Engine.load``), not one in ``avoid`` unless
        no other is healthy. The caller enters it (``with engine:``) at once."""
        best, score, n = None, math.inf, len(self.decode)
        self._turn += 1
        for k in range(n):
            e = self.decode[(self._turn + k) % n]
            s = e.load + (math.inf if e.url in avoid else 0.0)
            if e.healthy and (s < score or best is None):
                best, score = e, s
        return best

    # -- health ------------------------------------------------------------------------------
    def link_failed(self, pool: int, now: float | None = None) -> None:
        """A KV transfer over this pool's link failed: route around it until a probe
        (``links_due``, ``link_probed``) says it carries KV again; no client request probes."""
        self.core.link_failed(pool, (now or time.monotonic()) + self.link_retry_s)

    def links_due(self, now: float) -> list[str]:
        """Pools whose link is down and due for a probe."""
        if self.policy is None:
            return []
        return [
            route.name
            for route, ps in zip(self.policy.pools, self.core.live.pools, strict=True)
            if not ps.link.healthy and now >= ps.link.retry_at
        ]

    def link_probed(self, name: str, ok: bool, now: float | None = None) -> None:
        """The outcome of a link probe: up again, or the next probe after ``link_retry_s``."""
        if self.policy is None:
            return
        for i, route in enumerate(self.policy.pools):
            if route.name == name:
                if ok:
                    self.core.live.pools[i].link.set_healthy(True)
                else:
                    self.link_failed(i, now)

    def engine_failed(self, url: str) -> None:
        e = self.engines.get(url)
        if e is not None:
            e.healthy = False
            self.sync_health()

    def sync_health(self) -> None:
        """Copy endpoint health and queues into the routing core's live state."""
        policy = self.policy
        if policy is None:
            return
        live = self.core.live
        self._sync(live.local, policy.prefill_endpoints)
        for route, ps in zip(policy.pools, live.pools, strict=True):
            self._sync(ps.target, route.endpoints)

    def _sync(self, target: TargetState, urls: Sequence[str]) -> None:
        engines = [self.engines[u] for u in urls]
        for k, e in enumerate(engines):
            target.set_healthy(e.healthy, instance=k)
        target.set_waiting(int(sum(e.waiting for e in engines)))


def _without(policy: RoutingPolicy, bad: set[str]) -> RoutingPolicy:
    if not bad:
        return policy
    return replace(
        policy,
        prefill_endpoints=tuple(u for u in policy.prefill_endpoints if u not in bad),
        decode_endpoints=tuple(u for u in policy.decode_endpoints if u not in bad),
        pools=tuple(
            replace(p, endpoints=tuple(u for u in p.endpoints if u not in bad))
            for p in policy.pools
        ),
    )
