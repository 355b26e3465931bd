"""The fast loop in one object, as an HTTP router (or the simulator) holds it.

Per request: ``route`` (prefix lookups + ``decide``), then ``dispatched`` / ``prefilled`` as the
request moves. On the telemetry cadence: ``meter`` the link bytes, set queue depths and health on
``live``, and call ``observe``. On every published policy: ``set_policy``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from prfaas.routing.adapt import Adapter
from prfaas.routing.config import RoutingConfig
from prfaas.routing.decide import Decision, Target, decide
from prfaas.routing.policy import RoutingPolicy
from prfaas.routing.prefix import MISS, PrefixHit, PrefixIndex
from prfaas.routing.state import LinkState, LiveState, Mode, PoolState, TargetState


class Router:
    def __init__(
        self,
        policy: RoutingPolicy,
        local_instances: int,
        pool_instances: Mapping[str, int],
        config: RoutingConfig | None = None,
        local_index: PrefixIndex | None = None,
        pool_indexes: Mapping[str, PrefixIndex] | None = None,
    ) -> None:
        self.config = config or RoutingConfig()
        self.adapter = Adapter(self.config)
        self.live = LiveState(TargetState.of("local", local_instances))
        self.local_index = local_index
        self._pool_sizes = dict(pool_instances)
        self._pool_indexes = dict(pool_indexes or {})
        self._sent: list[float] = []
        self._metered: list[float] = []
        self._last_observe = math.nan
        self.policy = RoutingPolicy()
        self.set_policy(policy)

    # -- slow loop -------------------------------------------------------------------------
    def set_policy(self, policy: RoutingPolicy) -> None:
        """Swap in a published policy; pools keep their live state across versions by name."""
        old = {
            ps.target.name: (ps, sent) for ps, sent in zip(self.live.pools, self._sent, strict=True)
        }
        pools, sent = [], []
        mode = Mode.ABUNDANT if self.config.mode.starts_abundant else Mode.SCARCE
        for route in policy.pools:
            if route.name in old:
                ps, s = old[route.name]
                ps.link.budget_gbps = route.link_budget_gbps
            else:
                n = self._pool_sizes.get(route.name, 0)
                link = LinkState(route.name, route.link_budget_gbps)
                ps, s = PoolState(TargetState.of(route.name, n), link, mode), 0.0
            pools.append(ps)
            sent.append(s)
        self.live.pools = pools
        self._sent, self._metered = sent, list(sent)
        self.pool_indexes = [self._pool_indexes.get(r.name) for r in policy.pools]
        if policy.version != self.policy.version:
            self.adapter.reset(self.live)
        self.policy = policy

    # -- per request -----------------------------------------------------------------------
    def lookup(self, hashes: Sequence[int], total_tokens: int) -> tuple[PrefixHit, list[PrefixHit]]:
        local = self.local_index.match(hashes, total_tokens) if self.local_index else MISS
        pools = [ix.match(hashes, total_tokens) if ix else MISS for ix in self.pool_indexes]
        return local, pools

    def route(self, total_tokens: int, hashes: Sequence[int] = ()) -> Decision:
        local, pools = self.lookup(hashes, total_tokens) if hashes else (MISS, [])
        return decide(total_tokens, local, pools, self.policy, self.live, self.config)

    def route_hits(
        self, total_tokens: int, local: PrefixHit, pools: Sequence[PrefixHit]
    ) -> Decision:
        return decide(total_tokens, local, pools, self.policy, self.live, self.config)

    def dispatched(self, d: Decision) -> None:
        """The request was sent to ``d``'s instance: it adds to that instance's load."""
        target = self._target(d)
        if target is not None:
            target.instances[d.instance].load += d.uncached_tokens

    def prefilled(self, d: Decision) -> None:
        target = self._target(d)
        if target is not None:
            inst = target.instances[d.instance]
            inst.load = max(0.0, inst.load - d.uncached_tokens)

    def _target(self, d: Decision) -> TargetState | None:
        if d.target == Target.LOCAL:
            return self.live.local
        if d.target == Target.POOL:
            return self.live.pools[d.pool].target
        return None

    # -- telemetry -------------------------------------------------------------------------
    def meter(self, pool: int, nbytes: float) -> None:
        """``nbytes`` of KV (or cache) crossed the link of ``pool``."""
        self._sent[pool] += nbytes

    def observe(self, now: float) -> None:
        """Fold metered bytes into each link's egress (EWMA over ``utilisation_window_s``),
        then adapt."""
        last, self._last_observe = self._last_observe, now
        if not math.isnan(last) and now > last:
            # sustained utilisation, not bursts of it: layer-pipelined flows briefly fill the
            # link whenever several prefills stream at once, which is harmless
            weight = 1.0 - math.exp(-(now - last) / self.config.adapt.utilisation_window_s)
            for i, ps in enumerate(self.live.pools):
                gbps = (self._sent[i] - self._metered[i]) * 8 / 1e9 / (now - last)
                ps.link.egress_gbps += weight * (gbps - ps.link.egress_gbps)
        self._metered = list(self._sent)
        self.adapter.observe(now, self.live)
