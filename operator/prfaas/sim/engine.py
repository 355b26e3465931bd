"""The discrete-event engine: one configuration, one stream of requests.

Stations: PrefillPool instances and PD-P instances (a FIFO per instance; the router picks the
instance on arrival), the link from the pool (``link.Link``; a reverse one for PD→pool cache
transfers), and PD-D decode slots (``BS_max`` per instance, a shared FIFO when all are busy).

A request's life: arrive → ``Router.route_hits`` (the router's own code) → [cross-cluster cache
transfer] → prefill queue → prefill (``T_prefill`` of the uncached length on that hardware; on
the pool the KV streams over the link meanwhile, and the instance is held until its KV has left:
its transfer-cache blocks live in its HBM) → KV at a decode instance (one-way link latency for
pool prefills; intra-cluster RDMA is layer-pipelined and never the bottleneck) → decode slot →
first token one decode step later (TTFT) → ``output × T_decode`` later, done.

Every ``tick_s`` the router's telemetry is refreshed (metered link bytes, bytes in flight,
measured capacity and health; queue depths are kept live) and its short-timescale loop runs.
With ``Setup.replan``, every ``replan_s`` the operator's slow loop (``sim.slowloop``: the same
``prfaas.slowloop.decide`` with its safety rules and deadband) plans for the measured link
capacity once it has held for ``stable_s`` (shorter dips are the fast loop's business): it
converts at most one local instance between PD-P and PD-D per ``cooldown_s`` toward the plan
(the instance drains first: no new work, then ``role_change_s`` to restart in its new role) and
publishes the routing policy for the split after the step, with a new version when it changes.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from prfaas.model.scenario import Scenario
from prfaas.model.units import mib_to_gbit
from prfaas.routing.decide import Decision, Target
from prfaas.routing.policy import PoolRoute, RoutingPolicy
from prfaas.routing.prefix import MISS, PrefixHit, PrefixIndex
from prfaas.routing.router import Router
from prfaas.routing.state import InstanceState, TargetState
from prfaas.sim.arrivals import Requests
from prfaas.sim.link import Flow, Link
from prfaas.sim.options import SimOptions
from prfaas.sim.setups import Setup, Tables
from prfaas.sim.slowloop import POOL_NAME, RATE_WINDOW_S, SlowLoop

_PREFILL, _LINK, _DECODE, _DELIVER, _TICK, _CAPACITY, _REPLAN, _ROLE = range(8)
_PD_P, _PD_D, _TO_PD_P, _TO_PD_D = range(4)  # roles of a local instance
_KV, _CACHE_TO_LOCAL, _CACHE_TO_POOL = range(3)  # flow kinds
_BYTES_PER_GBIT = 1e9 / 8
_NO_HITS: tuple[PrefixHit, ...] = ()


class _Req:
    __slots__ = ("computed", "d", "flow", "i", "kv_gbit", "sent")

    def __init__(self, i: int, d: Decision) -> None:
        self.i = i
        self.d = d
        self.kv_gbit = 0.0
        self.computed = False
        self.sent = False
        self.flow: Flow | None = None


class _Prefill:
    """One prefill instance: FIFO, the request computing, held while its KV drains (pool)."""

    __slots__ = ("current", "index", "is_pool", "queue", "seconds", "state", "target")

    def __init__(
        self,
        index: int,
        state: InstanceState,
        target: TargetState,
        seconds: list[float],
        is_pool: bool,
    ) -> None:
        self.index = index
        self.state = state
        self.target = target
        self.seconds = seconds
        self.is_pool = is_pool
        self.queue: deque[_Req] = deque()
        self.current: _Req | None = None


@dataclass
class Record:
    """Everything a run measured, per request and per time bucket (``stats`` summarises)."""

    setup: Setup
    arrival: list[float]
    first_token: list[float]
    done: list[float]
    target: list[int]  # Target value; -2: never arrived (stopped before)
    end_time: float
    bucket_s: float
    egress_gbit: list[float]  # per bucket, pool → PD link
    reverse_gbit: float  # PD → pool cache transfers, total
    arrivals: list[int]  # per bucket
    offloads: list[int]  # per bucket
    threshold_sum: list[float]  # per bucket, effective threshold summed over ticks
    ticks: list[int]
    capacity: list[float]  # per bucket, link capacity at the last tick in it
    reasons: dict[str, int]
    cache_transfers: int
    policy_versions: int
    role_changes: int
    final_split: tuple[int, int]
    completions: int  # decode-finished events: equals the finite entries of ``done`` if no
    #                   request is completed twice


class Engine:
    def __init__(
        self,
        scenario: Scenario,
        setup: Setup,
        requests: Requests,
        options: SimOptions,
        tables: Tables,
        bucket_s: float,
    ) -> None:
        self.setup = setup
        self.req = requests
        self.opt = options
        self.tab = tables
        self.bucket_s = bucket_s
        decode = scenario.pd_cluster.instance.decode
        assert decode is not None
        self.step = decode.step_seconds
        self.slots = decode.max_batch_size
        self.latency = scenario.link.rtt_ms / 2000.0  # one way
        self.usable = scenario.link.usable_fraction
        self.capacity = scenario.link.capacity_gbps
        self.pool_name = POOL_NAME
        self.rdma = options.rdma_gbps

        hashed = requests.hashes is not None
        p = options.prefix
        every = p.snapshot_interval_blocks
        self.local_index: PrefixIndex | None = PrefixIndex(
            p.capacity_blocks, snapshot_interval_blocks=every
        )
        self.pool_index: PrefixIndex | None = PrefixIndex(
            p.capacity_blocks, snapshot_interval_blocks=every
        )
        if not hashed:
            self.local_index = self.pool_index = None
        elif not setup.n_pool:
            self.pool_index = None
        self.version = 1
        n_local = setup.n_prefill + setup.n_decode
        self.slowloop = (
            SlowLoop(scenario, setup.n_prefill, setup.n_decode, setup.n_pool, options.cooldown_s)
            if setup.replan and setup.n_pool
            else None
        )
        self.router = Router(
            self.slowloop.initial if self.slowloop else self._policy(setup.threshold),
            n_local,
            {self.pool_name: setup.n_pool},
            setup.routing,
            self.local_index,
            {self.pool_name: self.pool_index} if self.pool_index else None,
        )
        live = self.router.live
        # every local instance can hold either role; the router sees PD-D ones as unhealthy
        self.role = [_PD_P if k < setup.n_prefill else _PD_D for k in range(n_local)]
        for k, role in enumerate(self.role):
            live.local.set_healthy(role == _PD_P, instance=k)
        self.local = [
            _Prefill(k, s, live.local, tables.local_seconds, False)
            for k, s in enumerate(live.local.instances)
        ]
        self.pool: list[_Prefill] = []
        if live.pools:
            target = live.pools[0].target
            self.pool = [
                _Prefill(k, s, target, tables.pool_seconds, True)
                for k, s in enumerate(target.instances)
            ]
        self.link = Link(self.capacity, bucket_s)
        self.reverse = Link(self.capacity, bucket_s)
        self.capacity_since = 0.0

        self.free = [self.slots if r == _PD_D else 0 for r in self.role]  # admissible slots
        self.busy = [0] * n_local
        self.role_changes = 0
        self.completions = 0
        self.decode_wait: deque[_Req] = deque()
        self.heap: list[tuple[float, int, int, Any]] = []
        self.seq = 0
        self.active = 0
        self.metered = 0.0
        n = len(requests)
        self.first_token = [math.nan] * n
        self.done = [math.nan] * n
        self.target = [-2] * n
        self.arrivals: list[int] = []
        self.offloads: list[int] = []
        self.threshold_sum: list[float] = []
        self.ticks: list[int] = []
        self.cap_series: list[float] = []
        self.reasons: dict[str, int] = {}
        self.cache_transfers = 0
        self.now = 0.0

    def _policy(self, threshold: int | None) -> RoutingPolicy:
        """A static setup's policy, published once."""
        if not self.setup.n_pool:
            return RoutingPolicy(version=self.version)
        pools = (PoolRoute(self.pool_name, (), self.capacity * self.usable),)
        return RoutingPolicy(self.version, threshold, pools)

    # -- events ----------------------------------------------------------------------------
    def _push(self, t: float, kind: int, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, payload))

    def run(self, progress: Callable[[int], None] | None = None) -> Record:
        arrival = self.req.arrival.tolist()
        n = len(arrival)
        last = arrival[-1] if n else 0.0
        stop = last + self.opt.drain_s if self.opt.drain_s is not None else math.inf
        self._push(0.0, _TICK, None)
        for start, gbps in self.opt.link.points:
            self._push(start, _CAPACITY, gbps)
        if self.slowloop is not None:
            self._push(self.opt.replan_s, _REPLAN, None)
        handle = self._handlers()
        heap, ai = self.heap, 0
        report_every = max(1, n // 200)
        while True:
            if ai < n and (not heap or arrival[ai] <= heap[0][0]):
                if arrival[ai] > stop:
                    break
                self.now = arrival[ai]
                self._arrive(ai, self.now)
                ai += 1
                if progress is not None and ai % report_every == 0:
                    progress(ai)
                continue
            if not heap or (ai >= n and self.active == 0):
                break
            t, _, kind, payload = heapq.heappop(heap)
            if t > stop:
                self.now = stop
                break
            self.now = t
            handle[kind](payload, t)
        if progress is not None:
            progress(n)
        return self._record(arrival)

    def _handlers(self) -> list[Callable[[Any, float], None]]:
        """Event handlers indexed by event kind."""
        by_kind: dict[int, Callable[[Any, float], None]] = {
            _PREFILL: self._prefilled,
            _LINK: self._link_event,
            _DECODE: lambda payload, t: self._decoded(payload[0], payload[1], t),
            _DELIVER: self._to_decode,
            _TICK: lambda _, t: self._tick(t),
            _CAPACITY: self._set_capacity,
            _REPLAN: lambda _, t: self._replan(t),
            _ROLE: self._role_ready,
        }
        return [by_kind[k] for k in range(len(by_kind))]

    def _link_event(self, payload: tuple[Link, int], now: float) -> None:
        link, generation = payload
        if generation == link.generation:  # else superseded by a later reshare
            self._link_wake(link, now)

    def _record(self, arrival: list[float]) -> Record:
        end = self.now
        self.link.advance(end)
        self.reverse.advance(end)
        return Record(
            self.setup,
            arrival,
            self.first_token,
            self.done,
            self.target,
            end,
            self.bucket_s,
            self.link.per_bucket,
            self.reverse.delivered,
            self.arrivals,
            self.offloads,
            self.threshold_sum,
            self.ticks,
            self.cap_series,
            self.reasons,
            self.cache_transfers,
            self.version,
            self.role_changes,
            (self.role.count(_PD_P), self.role.count(_PD_D)),
            self.completions,
        )

    # -- arrival and routing ---------------------------------------------------------------
    def _arrive(self, i: int, now: float) -> None:
        req = self.req
        tokens = int(req.tokens[i])
        pools: Sequence[PrefixHit]
        if req.hashes is not None:
            local, pools = self.router.lookup(req.hashes[i], tokens)
        elif req.cached_pd is not None and req.cached_pool is not None:
            local = PrefixHit(int(req.cached_pd[i]))
            pools = [PrefixHit(int(req.cached_pool[i]))]
        else:
            local, pools = MISS, _NO_HITS
        d = self.router.route_hits(tokens, local, pools)
        self.target[i] = int(d.target)
        self.reasons[d.reason] = self.reasons.get(d.reason, 0) + 1
        b = int(now // self.bucket_s)
        if b >= len(self.arrivals):
            grow = b + 1 - len(self.arrivals)
            self.arrivals.extend([0] * grow)
            self.offloads.extend([0] * grow)
        self.arrivals[b] += 1
        if d.target == Target.REJECT:
            return
        self.active += 1
        r = _Req(i, d)
        self.router.dispatched(d)
        if d.target == Target.POOL:
            self.offloads[b] += 1
            # only the increment crosses: the PD cluster already holds its cached prefix
            kv = self.tab.kv_mib
            mib = kv[tokens] - (kv[local.tokens] - self.tab.kv_fixed_mib if local.tokens else 0.0)
            r.kv_gbit = mib_to_gbit(mib)
        if d.transfer_tokens > 0:
            self.cache_transfers += 1
            gbit = self.tab.kv_gbit(d.transfer_tokens)
            if d.target == Target.LOCAL:
                flow = Flow(gbit, math.inf, _CACHE_TO_LOCAL, r, now, now)
                self._add_flow(self.link, flow, now)
            else:
                flow = Flow(gbit, math.inf, _CACHE_TO_POOL, r, now, now)
                self._add_flow(self.reverse, flow, now)
            return
        self._enqueue(r, now)

    def _station(self, d: Decision) -> _Prefill:
        return self.pool[d.instance] if d.target == Target.POOL else self.local[d.instance]

    def _enqueue(self, r: _Req, now: float) -> None:
        st = self._station(r.d)
        if st.current is None:
            self._start(st, r, now)
        else:
            st.queue.append(r)
            st.target.add_waiting(1)

    def _start(self, st: _Prefill, r: _Req, now: float) -> None:
        st.current = r
        seconds = st.seconds[r.d.uncached_tokens]
        self._push(now + seconds, _PREFILL, st)
        if st.is_pool:
            cap = r.kv_gbit / seconds if seconds > 0 else math.inf
            r.flow = Flow(r.kv_gbit, cap, _KV, r, now, now + seconds)
            self._add_flow(self.link, r.flow, now)

    def _release(self, st: _Prefill, now: float) -> None:
        st.current = None
        if st.queue:
            st.target.add_waiting(-1)
            self._start(st, st.queue.popleft(), now)
        elif not st.is_pool and self.role[st.index] == _TO_PD_D:
            self._push(now + self.opt.role_change_s, _ROLE, st.index)

    def _prefilled(self, st: _Prefill, now: float) -> None:
        r = st.current
        assert r is not None
        d = r.d
        hashes = self.req.hashes
        if hashes is not None:  # the prefix lands in the index of the cluster that computed it
            self.router.prefilled(d, hashes[r.i], int(self.req.tokens[r.i]))
        else:
            self.router.prefilled(d)
        if not st.is_pool:
            seconds = st.seconds[d.uncached_tokens]
            lag = mib_to_gbit(self.tab.kv_mib[d.uncached_tokens]) / self.rdma - seconds
            self._release(st, now)
            self._deliver(r, now + max(0.0, lag))
            return
        r.computed = True
        if r.sent:
            self._release(st, now)
            self._deliver(r, now + self.latency)
        elif r.flow is not None:
            link = self.link
            link.advance(now)
            r.flow.cap = math.inf
            self._schedule(link)

    # -- link ------------------------------------------------------------------------------
    def _add_flow(self, link: Link, flow: Flow, now: float) -> None:
        link.advance(now)
        link.flows.append(flow)
        self._schedule(link)

    def _schedule(self, link: Link) -> None:
        wake = link.reshare()
        if wake < math.inf:
            self._push(wake, _LINK, (link, link.generation))

    def _link_wake(self, link: Link, now: float) -> None:
        link.advance(now)
        for f in link.pop_done():
            r: _Req = f.owner
            if f.kind == _KV:
                r.sent = True
                r.flow = None
                if r.computed:
                    self._release(self.pool[r.d.instance], now)
                    self._deliver(r, now + self.latency)
            else:
                dest = self.local_index if f.kind == _CACHE_TO_LOCAL else self.pool_index
                if dest is not None and self.req.hashes is not None:
                    dest.insert(self.req.hashes[r.i], r.d.transfer_tokens + 1)
                self._enqueue(r, now)
        self._schedule(link)

    def _set_capacity(self, gbps: float, now: float) -> None:
        if gbps != self.link.capacity:
            self.capacity_since = now
        for link in (self.link, self.reverse):
            link.advance(now)
            link.capacity = gbps
            self._schedule(link)

    # -- decode ----------------------------------------------------------------------------
    def _deliver(self, r: _Req, at: float) -> None:
        if at > self.now:
            self._push(at, _DELIVER, r)
        else:
            self._to_decode(r, at)

    def _to_decode(self, r: _Req, now: float) -> None:
        hashes = self.req.hashes
        if r.d.target == Target.POOL and self.local_index is not None and hashes is not None:
            # the shipped KV lands in the PD cluster's cache pool too
            self.local_index.insert(hashes[r.i], int(self.req.tokens[r.i]))
        k, most = -1, 0
        for j, f in enumerate(self.free):
            if f > most:
                k, most = j, f
        if k < 0:
            self.decode_wait.append(r)
            return
        self._begin_decode(k, r, now)

    def _begin_decode(self, k: int, r: _Req, now: float) -> None:
        self.free[k] -= 1
        self.busy[k] += 1
        self.first_token[r.i] = now + self.step
        self._push(now + int(self.req.output[r.i]) * self.step, _DECODE, (k, r))

    def _decoded(self, k: int, r: _Req, now: float) -> None:
        self.done[r.i] = now
        self.completions += 1
        self.active -= 1
        self.busy[k] -= 1
        if self.role[k] == _PD_D:
            self.free[k] += 1
            if self.decode_wait:
                self._begin_decode(k, self.decode_wait.popleft(), now)
        elif self.role[k] == _TO_PD_P and self.busy[k] == 0:
            self._push(now + self.opt.role_change_s, _ROLE, k)

    # -- the router's telemetry and the slow loop ------------------------------------------
    def _tick(self, now: float) -> None:
        router, link = self.router, self.link
        if router.live.pools:
            link.advance(now)
            router.meter(0, (link.delivered - self.metered) * _BYTES_PER_GBIT)
            self.metered = link.delivered
            router.live.pools[0].link.measured(link.capacity, link.in_flight(now) * _BYTES_PER_GBIT)
        router.observe(now)
        b = int(now // self.bucket_s)
        if b >= len(self.ticks):
            grow = b + 1 - len(self.ticks)
            self.ticks.extend([0] * grow)
            self.threshold_sum.extend([0.0] * grow)
            self.cap_series.extend([math.nan] * grow)
        t = router.policy.threshold_tokens
        if t is not None and router.live.pools:
            t = router.live.pools[0].threshold(t) if self.setup.routing.adaptive else t
            self.threshold_sum[b] += t
            self.ticks[b] += 1
        self.cap_series[b] = link.capacity
        self._push(now + self.opt.tick_s, _TICK, None)

    def _replan(self, now: float) -> None:
        """The operator's slow loop on the settled link capacity and the measured arrival rate."""
        assert self.slowloop is not None
        self._push(now + self.opt.replan_s, _REPLAN, None)
        seen = self.link.capacity
        if seen <= 0 or now - self.capacity_since < self.opt.stable_s:
            return  # down, or not settled: the fast loop fails open / adapts meanwhile
        if _TO_PD_P in self.role or _TO_PD_D in self.role:
            return  # a conversion is under way: observe the split once it has settled
        n_p, n_d = self.role.count(_PD_P), self.role.count(_PD_D)
        step = self.slowloop.step(now, n_p, n_d, seen, self._rate(now))
        if step.convert:
            self._convert(now, to_prefill=step.convert > 0)
        if step.policy is not None:
            self.version = step.policy.version
            self.router.set_policy(step.policy)

    def _rate(self, now: float) -> float:
        """Arrivals per second over the last ``RATE_WINDOW_S`` (what Prometheus would say)."""
        window = min(RATE_WINDOW_S, now)
        if window <= 0:
            return 0.0
        arrival = self.req.arrival
        count = int(np.searchsorted(arrival, now, "right") - np.searchsorted(arrival, now - window))
        return count / window

    def _convert(self, now: float, to_prefill: bool) -> bool:
        """Start one role conversion (drain first); False if the other role has one left."""
        live = self.router.live.local.instances
        if to_prefill:
            candidates = [k for k, r in enumerate(self.role) if r == _PD_D]
            if len(candidates) <= 1:
                return False
            k = min(candidates, key=self.busy.__getitem__)  # fewest sequences to drain
            self.role[k], self.free[k] = _TO_PD_P, 0
            if self.busy[k] == 0:
                self._push(now + self.opt.role_change_s, _ROLE, k)
            self.role_changes += 1
            return True
        candidates = [k for k, r in enumerate(self.role) if r == _PD_P]
        if len(candidates) <= 1:
            return False
        k = min(candidates, key=lambda j: live[j].load)
        self.role[k] = _TO_PD_D
        self.router.live.local.set_healthy(False, instance=k)  # the router sends it nothing new
        st = self.local[k]
        if st.current is None and not st.queue:
            self._push(now + self.opt.role_change_s, _ROLE, k)
        self.role_changes += 1
        return True

    def _role_ready(self, k: int, now: float) -> None:
        if self.role[k] == _TO_PD_P:
            self.role[k] = _PD_P
            self.router.live.local.set_healthy(True, instance=k)
        elif self.role[k] == _TO_PD_D:
            self.role[k] = _PD_D
            self.free[k] = self.slots
            while self.decode_wait and self.free[k] > 0:
                self._begin_decode(k, self.decode_wait.popleft(), now)
