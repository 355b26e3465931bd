"""The engines the router may use, as the published policy declares them, and their state.

The policy is the only source of upstream URLs: the router never forwards anywhere else. On a
new policy, targets keep their live state where endpoints stay the same and the routing core
(``prfaas.routing.Router``) swaps the policy in; prefill instance lists follow the endpoint
lists (the core's instance ``k`` is endpoint ``k``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from prfaas.routing.config import ModeThresholds, RoutingConfig
from prfaas.routing.decide import Decision, Target
from prfaas.routing.policy import RoutingPolicy
from prfaas.routing.prefix import PrefixIndex
from prfaas.routing.router import Router
from prfaas.routing.state import InstanceState, TargetState

# Scarce mode only: the P/D hand-off ships prefill→decode KV, not cached prefixes between
# clusters, so abundant mode's "use the best cache anywhere" has no data path here.
HTTP_ROUTING = RoutingConfig(mode=ModeThresholds(cache_transfers=False))


def valid_endpoint(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query


@dataclass
class Engine:
    """One upstream endpoint as the router sees it."""

    url: str
    healthy: bool = True
    waiting: float = 0.0  # scraped vllm:num_requests_waiting
    running: float = 0.0
    active: int = 0  # requests this router has in flight there


class Fleet:
    def __init__(self, config: RoutingConfig | None = None, link_retry_s: float = 5.0) -> None:
        self.config = config or HTTP_ROUTING
        self.link_retry_s = link_retry_s
        self.policy: RoutingPolicy | None = None
        self.core: Router | None = None
        self.local_index = PrefixIndex()
        self.pool_indexes: dict[str, PrefixIndex] = {}
        self.engines: dict[str, Engine] = {}
        self.decode: list[Engine] = []
        self._link_down_until: dict[str, float] = {}

    # -- policy ------------------------------------------------------------------------------
    def apply(self, policy: RoutingPolicy) -> list[str]:
        """Swap in a policy; returns the endpoints it declares that are not valid URLs (dropped)."""
        bad = [u for u in self._urls(policy) if not valid_endpoint(u)]
        policy = _without(policy, set(bad))
        for name in (p.name for p in policy.pools):
            self.pool_indexes.setdefault(name, PrefixIndex())
        if self.core is None:
            self.core = Router(
                policy,
                len(policy.prefill_endpoints),
                {p.name: len(p.endpoints) for p in policy.pools},
                self.config,
                self.local_index,
                self.pool_indexes,
            )
        else:
            self.core.set_policy(policy)
        core = self.core
        _resize(core.live.local, policy.prefill_endpoints)
        for route, ps in zip(policy.pools, core.live.pools, strict=True):
            _resize(ps.target, route.endpoints)
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

    def pick_decode(self) -> Engine | None:
        """Least busy healthy decode engine: this router's own in-flight plus scraped queue."""
        best, score = None, math.inf
        for e in self.decode:
            s = e.active + e.waiting
            if e.healthy and s < score:
                best, score = e, s
        return best

    # -- health ------------------------------------------------------------------------------
    def link_failed(self, pool: int, now: float | None = None) -> None:
        """A KV transfer over this pool's link failed: route around it for ``link_retry_s``,
        then let traffic probe it again (half-open)."""
        assert self.core is not None and self.policy is not None
        name = self.policy.pools[pool].name
        self._link_down_until[name] = (now or time.monotonic()) + self.link_retry_s
        self.core.live.pools[pool].link.healthy = False

    def engine_failed(self, url: str) -> None:
        e = self.engines.get(url)
        if e is not None:
            e.healthy = False
            self.sync_health()

    def sync_health(self, now: float | None = None) -> None:
        """Copy endpoint health into the routing core's live state; re-open links due."""
        if self.core is None or self.policy is None:
            return
        now = now or time.monotonic()
        live = self.core.live
        for inst, url in zip(live.local.instances, self.policy.prefill_endpoints, strict=True):
            inst.healthy = self.engines[url].healthy
        live.local.waiting = int(
            sum(self.engines[u].waiting for u in self.policy.prefill_endpoints)
        )
        for route, ps in zip(self.policy.pools, live.pools, strict=True):
            for inst, url in zip(ps.target.instances, route.endpoints, strict=True):
                inst.healthy = self.engines[url].healthy
            ps.target.waiting = int(sum(self.engines[u].waiting for u in route.endpoints))
            if not ps.link.healthy and now >= self._link_down_until.get(route.name, 0.0):
                ps.link.healthy = True


def _resize(target: TargetState, urls: Sequence[str]) -> None:
    have = target.instances
    if len(have) > len(urls):
        del have[len(urls) :]
    while len(have) < len(urls):
        have.append(InstanceState(urls[len(have)]))
    for inst, url in zip(have, urls, strict=True):
        if inst.name != url:
            inst.name, inst.load = url, 0.0


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
