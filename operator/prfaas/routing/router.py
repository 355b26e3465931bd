"""The fast loop in one object, as an HTTP router (or the simulator) holds it.

Per request: ``route`` (prefix lookups + ``decide``), then ``with in_flight(d, ...)`` around the
prefill (its load, then its prefix in the index of the cluster that computed it) and
``with kv_in_flight(d, nbytes)`` around the KV crossing the link (bytes in flight, metered); an
event-driven caller (the simulator) calls ``dispatched`` / ``prefilled`` instead. On the
telemetry cadence: ``meter`` the link bytes, set queue depths and health through the state
objects' methods (``TargetState.set_healthy``, ``set_waiting``; ``reopen_links``), and call
``observe``. On every published policy: ``set_policy``, or ``follow`` when the targets' instances
are the policy's endpoints.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager

from prfaas.routing.adapt import Adapter
from prfaas.routing.config import RoutingConfig
from prfaas.routing.decide import Decision, Target, decide, decide_local
from prfaas.routing.policy import RoutingPolicy
from prfaas.routing.prefix import MISS, PrefixHit, PrefixIndex
from prfaas.routing.state import InstanceState, LinkState, LiveState, Mode, PoolState, TargetState

_NOTHING: AbstractContextManager[None] = contextlib.nullcontext()  # reusable: no allocation


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
        self._reported: list[float | None] = []  # pool-side bytes since the last observe
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
        self._reported = [None] * len(pools)
        self.pool_indexes = [self._pool_indexes.get(r.name) for r in policy.pools]
        if policy.version != self.policy.version and policy.plan_key() != self.policy.plan_key():
            self.adapter.reset(self.live)  # a new plan, not only engines that came or went
        self.policy = policy

    def follow(self, policy: RoutingPolicy) -> None:
        """``set_policy`` for a router that forwards to the policy's endpoints: each target's
        instance ``k`` becomes its endpoint ``k`` (state kept by endpoint), and a pool new to the
        router gets an empty prefix index."""
        for route in policy.pools:
            self._pool_indexes.setdefault(route.name, PrefixIndex())
        self.set_policy(policy)
        self.live.local.follow(policy.prefill_endpoints)
        for route, ps in zip(policy.pools, self.live.pools, strict=True):
            ps.target.follow(route.endpoints)

    # -- per request -----------------------------------------------------------------------
    def lookup(self, hashes: Sequence[int], total_tokens: int) -> tuple[PrefixHit, list[PrefixHit]]:
        local = self.local_index.match(hashes, total_tokens) if self.local_index else MISS
        pools = [ix.match(hashes, total_tokens) if ix else MISS for ix in self.pool_indexes]
        return local, pools

    def route(self, total_tokens: int, hashes: Sequence[int] = ()) -> Decision:
        local, pools = self.lookup(hashes, total_tokens) if hashes else (MISS, [])
        return decide(total_tokens, local, pools, self.policy, self.live, self.config)

    def route_local(self, total_tokens: int, hashes: Sequence[int] = ()) -> Decision:
        """``route``, but never to a pool (fail open after a pool or its KVCache failed)."""
        index = self.local_index
        local = index.match(hashes, total_tokens) if index is not None and hashes else MISS
        return decide_local(total_tokens, local, self.policy, self.live, self.config)

    def route_hits(
        self, total_tokens: int, local: PrefixHit, pools: Sequence[PrefixHit]
    ) -> Decision:
        return decide(total_tokens, local, pools, self.policy, self.live, self.config)

    def in_flight(self, d: Decision, hashes: Sequence[int] = (), total_tokens: int = 0) -> InFlight:
        """``with router.in_flight(d, hashes, n):`` around the prefill of ``d``: its uncached
        tokens load the chosen instance until the block ends, however it ends; a block that ends
        without an exception records the prompt's prefix in that cluster's index."""
        return InFlight(self._instance(d), d, self._index(d), hashes, total_tokens)

    def dispatched(self, d: Decision) -> None:
        """The request was sent to ``d``'s instance: it adds to that instance's load."""
        inst = self._instance(d)
        if inst is not None:
            inst.load += d.uncached_tokens

    def prefilled(self, d: Decision, hashes: Sequence[int] = (), total_tokens: int = 0) -> None:
        """The prefill of ``d`` is done: its load goes, and with ``hashes`` the prompt's prefix
        is recorded in the index of the cluster that computed it (``d.pool`` by position)."""
        _prefilled(self._instance(d), d, self._index(d), hashes, total_tokens)

    def kv_in_flight(self, d: Decision, nbytes: float) -> AbstractContextManager[None]:
        """``with router.kv_in_flight(d, nbytes):`` while the KV of a pool prefill crosses the
        link: metered on entry, in flight until the block ends. A no-op for a local prefill."""
        if d.target != Target.POOL:
            return _NOTHING
        return KVInFlight(self, d.pool, nbytes)

    def _instance(self, d: Decision) -> InstanceState | None:
        if d.target == Target.LOCAL:
            return self.live.local.instances[d.instance]
        if d.target == Target.POOL:
            return self.live.pools[d.pool].target.instances[d.instance]
        return None

    def _index(self, d: Decision) -> PrefixIndex | None:
        if d.target == Target.POOL:
            return self.pool_indexes[d.pool]
        return self.local_index if d.target == Target.LOCAL else None

    # -- telemetry -------------------------------------------------------------------------
    def meter(self, pool: int, nbytes: float) -> None:
        """``nbytes`` of KV (or cache) crossed the link of ``pool``."""
        self._sent[pool] += nbytes

    def reported(self, pool: int, nbytes: float | None, pending: float | None) -> None:
        """The pool side's reading of the link of ``pool`` (every router replica reads the
        same): ``nbytes`` offered since its last reading, ``pending`` not sent yet; None: no
        reading (the link's egress and bytes in flight fall back to this router's own)."""
        if nbytes is not None:
            self._reported[pool] = (self._reported[pool] or 0.0) + nbytes
        self.live.pools[pool].link.report(pending)

    def link_failed(self, pool: int, retry_at: float) -> None:
        """A transfer over the link of ``pool`` failed: route around it until ``retry_at``."""
        self.live.pools[pool].link.failed(retry_at)

    def reopen_links(self, now: float) -> None:
        """Failed links whose retry time has come take traffic again (half-open)."""
        for ps in self.live.pools:
            ps.link.reopen(now)

    def observe(self, now: float) -> None:
        """Fold metered bytes (the pool side's, reported since the last call, else this
        router's own) into each link's egress (EWMA over ``utilisation_window_s``), then
        adapt."""
        last, self._last_observe = self._last_observe, now
        if not math.isnan(last) and now > last:
            # sustained utilisation, not bursts of it: layer-pipelined flows briefly fill the
            # link whenever several prefills stream at once, which is harmless
            weight = 1.0 - math.exp(-(now - last) / self.config.adapt.utilisation_window_s)
            for i, ps in enumerate(self.live.pools):
                pool_side = self._reported[i]
                nbytes = self._sent[i] - self._metered[i] if pool_side is None else pool_side
                gbps = nbytes * 8 / 1e9 / (now - last)
                ps.link.egress_gbps += weight * (gbps - ps.link.egress_gbps)
        self._metered = list(self._sent)
        self._reported = [None] * len(self._reported)
        self.adapter.observe(now, self.live)


class InFlight:
    """The load of one prefill on its instance (see ``Router.in_flight``). It holds the instance
    and index themselves, so a policy swapped in meanwhile cannot misdirect the release."""

    __slots__ = ("_d", "_hashes", "_index", "_instance", "_tokens")

    def __init__(
        self,
        instance: InstanceState | None,
        d: Decision,
        index: PrefixIndex | None,
        hashes: Sequence[int],
        total_tokens: int,
    ) -> None:
        self._instance = instance
        self._d = d
        self._index = index
        self._hashes = hashes
        self._tokens = total_tokens

    def __enter__(self) -> None:
        if self._instance is not None:
            self._instance.load += self._d.uncached_tokens

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        hashes = self._hashes if exc_type is None else ()
        _prefilled(self._instance, self._d, self._index, hashes, self._tokens)


class KVInFlight:
    """KV bytes of one pool prefill on the link (see ``Router.kv_in_flight``)."""

    __slots__ = ("_link", "_nbytes", "_pool", "_router")

    def __init__(self, router: Router, pool: int, nbytes: float) -> None:
        self._router = router
        self._pool = pool
        self._link = router.live.pools[pool].link
        self._nbytes = nbytes

    def __enter__(self) -> None:
        self._router.meter(self._pool, self._nbytes)
        self._link.sent(self._nbytes)

    def __exit__(self, *_: object) -> None:
        self._link.landed(self._nbytes)


def _prefilled(
    inst: InstanceState | None,
    d: Decision,
    index: PrefixIndex | None,
    hashes: Sequence[int],
    total_tokens: int,
) -> None:
    if inst is not None:
        inst.load = max(0.0, inst.load - d.uncached_tokens)
    if hashes and index is not None:
        index.insert(hashes, total_tokens, d.instance)
