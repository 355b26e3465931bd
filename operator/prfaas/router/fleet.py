"""The engines the router may use, as the published policy declares them, and their state.

The policy is the only source of upstream URLs: the router never forwards anywhere else. A local
group is either a list of URLs or (``prefillDiscovery``/``decodeDiscovery``) the EndpointSlices
the router lists itself; ``found`` holds what they list now, ready engines only, and the policy
the router runs is the published one with those engines added (``RoutingPolicy.with_found``).
On every change the routing core (``prfaas.routing.Router.follow``) makes its prefill instance
lists the endpoint lists (the core's instance ``k`` is endpoint ``k``), keeping live state by
endpoint; the fleet copies scraped health and queue depths into the core.

Requests in flight are counted by endpoint (``Engine.active``; ``with fleet.in_flight(...)``
around a prefill, ``with engine:`` around a decode). An engine that leaves the policy (scaled
away, terminating, unready) gets no new request; while requests are still in flight there it
is *draining* (``draining``), and they finish.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prfaas.router.allow import Allowlist
from prfaas.routing.config import ModeThresholds, RoutingConfig
from prfaas.routing.decide import Decision, Target
from prfaas.routing.policy import EndpointSource, Handoff, RoutingPolicy
from prfaas.routing.prefix import PrefixIndex
from prfaas.routing.router import InFlight, Router
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
    kv_offered: float | None = None  # pool side of the link (``linkload``): last counter read
    kv_new: float = 0.0  # offered since the scrape before
    kv_pending: float | None = None  # offered, not sent yet; None: no reading this round
    refused: bool = False  # the last failure was a refused connection or a failed request
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

    def watching(self, expire: Callable[[], None]) -> _Watch:
        """``with engine.watching(expire):`` a wait on this engine, ended by ``hung()``."""
        return _Watch(self.waits, expire)

    def hung(self) -> None:
        """Dead or not answering: unhealthy, and every wait on it ends now (fails over)."""
        self.healthy = False
        for expire in list(self.waits):
            expire()


class _Watch:
    """A class, not a generator: three of these per request (a generator's context manager
    costs several times more)."""

    __slots__ = ("_expire", "_waits")

    def __init__(self, waits: set[Callable[[], None]], expire: Callable[[], None]) -> None:
        self._waits, self._expire = waits, expire

    def __enter__(self) -> None:
        self._waits.add(self._expire)

    def __exit__(self, *_: object) -> None:
        self._waits.discard(self._expire)


class PrefillInFlight:
    """A prefill in flight: its load on the routing core's instance and one request at its
    endpoint, released together however the block ends."""

    __slots__ = ("_core", "_engine")

    def __init__(self, core: InFlight, engine: Engine) -> None:
        self._core = core
        self._engine = engine

    def __enter__(self) -> None:
        self._engine.active += 1
        self._core.__enter__()

    def __exit__(self, exc_type: type[BaseException] | None, *rest: Any) -> None:
        self._engine.active -= 1
        self._core.__exit__(exc_type, *rest)


class Fleet:
    def __init__(
        self,
        config: RoutingConfig | None = None,
        link_retry_s: float = 1.0,
        resolve_localhost: bool = False,
        allow: Allowlist | None = None,
    ) -> None:
        self.config = config or HTTP_ROUTING
        self.allow = allow or Allowlist()  # where declared (not discovered) endpoints may be
        self.link_retry_s = link_retry_s
        # engines on this host named ``<name>.localhost``: EndpointSlices may not hold loopback
        # addresses, on purpose, so this is opt-in (development, tests)
        self._resolve: Callable[[str], str] = loopback if resolve_localhost else str
        self.published: RoutingPolicy | None = None  # as the operator (or the file) says
        self.found: dict[EndpointSource, tuple[str, ...]] = {}  # ready engines, by source
        self.policy: RoutingPolicy | None = None  # what runs; None: no policy received yet
        self.core = Router(RoutingPolicy(), 0, {}, self.config, PrefixIndex())
        self.engines: dict[str, Engine] = {}
        self.draining: dict[str, Engine] = {}  # left the policy, requests still in flight
        self.decode: list[Engine] = []
        self._turn = 0  # ties between decode engines go round

    # -- policy ------------------------------------------------------------------------------
    def apply(self, policy: RoutingPolicy) -> list[tuple[str, str]]:
        """Swap in a published policy; returns the endpoints dropped, with why: ``invalid``
        (not an http(s) URL) or ``not_allowed`` (declared, not discovered, and outside the
        allowlist)."""
        self.published = policy
        self.found = {s: u for s, u in self.found.items() if s in policy.sources}
        return self._follow()

    def set_found(self, source: EndpointSource, urls: Sequence[str]) -> list[tuple[str, str]]:
        """The ready engines of ``source`` now (a discovery watch's news); returns the invalid
        ones (dropped). Ignored unless the published policy names the source."""
        if self.published is None or source not in self.published.sources:
            return []
        self.found[source] = tuple(urls)
        return self._follow()

    def _follow(self) -> list[tuple[str, str]]:
        assert self.published is not None
        policy = self.published.with_found(self.found)
        found = {u for urls in self.found.values() for u in urls}
        found.update(u for route in policy.pools if route.discovered for u in route.endpoints)
        bad: dict[str, str] = {}
        for u in self._urls(policy):
            if not valid_endpoint(u):
                bad[u] = "invalid"
            elif u not in found and not self.allow.allows(self._resolve(u)):
                bad[u] = "not_allowed"  # checked where it would really connect
        policy = _mapped(policy, lambda u: None if u in bad else self._resolve(u))
        self.core.follow(policy)
        keep = set(self._urls(policy))
        old, self.engines = self.engines, {}
        for u in self._urls(policy):
            if u not in self.engines:  # an engine that comes back keeps its count in flight
                back = old.pop(u, None) or self.draining.pop(u, None)
                self.engines[u] = back if back is not None else Engine(u)
        self.draining.update((u, e) for u, e in old.items() if u not in keep)
        self.decode = [self.engines[u] for u in policy.decode_endpoints]
        self.policy = policy
        self.sync_health()
        return list(bad.items())

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

    def handoff(self, d: Decision) -> Handoff:
        """The P/D protocol of the group ``d`` prefills on."""
        assert self.policy is not None
        if d.target == Target.POOL:
            return self.policy.pools[d.pool].handoff
        return self.policy.prefill_handoff

    def in_flight(
        self, d: Decision, hashes: Sequence[int] = (), total_tokens: int = 0
    ) -> PrefillInFlight:
        """``with fleet.in_flight(d, hashes, n):`` around the prefill of ``d`` (decided under the
        policy running now): ``Router.in_flight`` plus a request in flight at its endpoint."""
        engine = self.engines[self.prefill_url(d)]
        return PrefillInFlight(self.core.in_flight(d, hashes, total_tokens), engine)

    def routes_to(self, engine: Engine) -> bool:
        """``engine`` is one of the decode engines the running policy lists."""
        return any(e is engine for e in self.decode)

    def has_decode(self) -> bool:
        usable = serving(self.decode)
        return any(usable(e) for e in self.decode)

    def pick_decode(self, avoid: Sequence[str] = ()) -> Engine | None:
        """Least loaded serving decode engine (``Engine.load``, ``serving``), not one in
        ``avoid`` unless no other serves. The caller enters it (``with engine:``) at once."""
        usable = serving(self.decode)
        best, score, n = None, math.inf, len(self.decode)
        self._turn += 1
        for k in range(n):
            e = self.decode[(self._turn + k) % n]
            s = e.load + (math.inf if e.url in avoid else 0.0)
            if usable(e) and (s < score or best is None):
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
            e.healthy, e.refused = False, True
            self.sync_health()

    def endpoint_states(self) -> dict[str, dict[str, Any]]:
        """Every endpoint with its state, the draining ones too (for ``/policy``)."""
        out: dict[str, dict[str, Any]] = {}
        for e in self.engines.values():
            out[e.url] = {"healthy": e.healthy, "waiting": e.waiting, "inFlight": e.active}
        for e in self.draining.values():
            out[e.url] = {"draining": True, "inFlight": e.active}
        return out

    def sync_health(self) -> None:
        """Copy endpoint health and queues into the routing core's live state; forget drained
        engines."""
        self.draining = {u: e for u, e in self.draining.items() if e.active > 0}
        policy = self.policy
        if policy is None:
            return
        live = self.core.live
        self._sync(live.local, policy.prefill_endpoints, last_resort=True)
        for route, ps in zip(policy.pools, live.pools, strict=True):
            self._sync(ps.target, route.endpoints)

    def _sync(self, target: TargetState, urls: Sequence[str], last_resort: bool = False) -> None:
        """``last_resort``: health as ``serving`` judges it (local prefill, where every request
        fails open to, as decode); a pool has the local group behind it, so only healthy counts."""
        engines = [self.engines[u] for u in urls]
        usable = serving(engines) if last_resort else _healthy
        for k, e in enumerate(engines):
            target.set_healthy(usable(e), instance=k)
        target.set_waiting(int(sum(e.waiting for e in engines)))


def _healthy(e: Engine) -> bool:
    return e.healthy


def _scrapes_missed_only(e: Engine) -> bool:
    return not e.refused


def serving(engines: Sequence[Engine]) -> Callable[[Engine], bool]:
    """Which engines of a group may take a request: the healthy ones; with none healthy, those
    that only missed scrapes (timeouts; none refused a connection or failed a request). On a
    saturated host every scrape may time out while the engines still serve, and a certain 503
    is worse than a request that may fail over."""
    return _healthy if any(e.healthy for e in engines) else _scrapes_missed_only


def _mapped(policy: RoutingPolicy, fn: Callable[[str], str | None]) -> RoutingPolicy:
    """Every endpoint through ``fn`` (None: dropped); a duplicate keeps its first place."""

    def each(urls: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v for u in urls if (v := fn(u)) is not None))

    return replace(
        policy,
        prefill_endpoints=each(policy.prefill_endpoints),
        decode_endpoints=each(policy.decode_endpoints),
        pools=tuple(replace(p, endpoints=each(p.endpoints)) for p in policy.pools),
    )


def loopback(url: str) -> str:
    """A host name under ``.localhost`` as the IPv4 loopback address (RFC 6761 §6.3)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host != "localhost" and not host.endswith(".localhost"):
        return url
    netloc = "127.0.0.1" if parts.port is None else f"127.0.0.1:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
