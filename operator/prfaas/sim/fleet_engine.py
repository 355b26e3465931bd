"""The discrete-event model of a fleet: several PD clusters sharing several PrefillPools.

Each PD cluster runs its own router (``prfaas.routing.Router``, the HTTP router's code) on its
published policy: one threshold per pool it may use (the plan's ``t_i``), the pools the plan
sends it to, and the other pools it can reach as standby routes (used only while every planned
pool is down). Stations are as in the single-cluster engine (``sim.engine``): FIFO prefill
instances, layer-pipelined KV transfers sharing each link max-min fairly (``sim.link``), a pool
instance held until its KV has left, decode slots (``BS_max`` per PD-D instance, a shared FIFO
when all are busy), first token one decode step after the KV lands.

What is shared: a pool's instances and queue. Every cluster's router sees the same pool target
(queue depth and per-instance load, as engine telemetry would show it) and meters its own link.
Not modelled: prefix caches, the pool datacenter's aggregate egress (each link is its own
bottleneck), role conversions (plans are static here).

Failures (``Fault``): a link's capacity drops to 0 for a while (its transfers fail and their
prefills are placed again by their router, which sees the link down at once and fails open; the
link is probed again at the first telemetry tick after it is back), or a pool goes down (routers
see it at once, like a failed health check; its queued and running prefills are placed again,
their transfers dropped).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from prfaas.model.fleet import Fleet
from prfaas.model.fleet_planner import FleetPlan
from prfaas.model.units import mib_to_gbit
from prfaas.routing.config import RoutingConfig
from prfaas.routing.decide import Decision, Target
from prfaas.routing.policy import PoolRoute, RoutingPolicy
from prfaas.routing.prefix import MISS
from prfaas.routing.router import Router
from prfaas.routing.state import TargetState
from prfaas.sim.link import Flow, Link

_PREFILL, _LINK, _DELIVER, _DECODE, _TICK, _FAULT = range(6)
_BYTES_PER_GBIT = 1e9 / 8


@dataclass(frozen=True)
class Fault:
    """``link`` (``target`` = ``CLUSTER/POOL``) at 0 Gbps, or ``pool`` (``target`` = its name)
    down, during [``start_s``, ``end_s``)."""

    kind: Literal["link", "pool"]
    target: str
    start_s: float
    end_s: float = math.inf


@dataclass(frozen=True)
class Arrivals:
    """Every request of the run, all clusters merged in arrival order."""

    time: list[float]
    cluster: list[int]
    tokens: list[int]
    output: list[int]


@dataclass
class FleetRecord:
    """Per request: arrival, first token, completion (NaN: none), cluster, where it prefilled."""

    arrival: list[float]
    cluster: list[int]
    first_token: list[float]
    done: list[float]
    target: list[int]  # Target value; -2: never arrived
    end_time: float
    rerouted: int = 0
    link_gbit: dict[tuple[str, str], float] = field(default_factory=dict)


class _Req:
    __slots__ = ("c", "computed", "d", "flow", "i", "kv_gbit", "sent")

    def __init__(self, i: int, c: int, d: Decision) -> None:
        self.i, self.c, self.d = i, c, d
        self.kv_gbit = 0.0
        self.computed = False
        self.sent = False
        self.flow: Flow | None = None


class _Station:
    __slots__ = ("current", "pool", "queue", "seconds", "target")

    def __init__(self, target: TargetState, seconds: list[float], pool: int) -> None:
        self.target = target
        self.seconds = seconds
        self.pool = pool  # fleet pool index, -1 for a local PD-P instance
        self.queue: deque[_Req] = deque()
        self.current: _Req | None = None


class _Cluster:
    """One PD cluster: its router, PD-P stations, decode slots, and links by route."""

    def __init__(self, router: Router, routes: list[int], links: list[Link], rtt: list[float]):
        self.router = router
        self.routes = routes  # route r → fleet pool index
        self.links = links  # route r → its link
        self.latency = [ms / 2000.0 for ms in rtt]  # one way, seconds
        self.metered = [0.0] * len(links)
        self.local: list[_Station] = []
        self.slots = 0
        self.wait: deque[_Req] = deque()
        self.step = 0.0
        self.kv: list[float] = []
        self.local_seconds: list[float] = []


class FleetEngine:
    def __init__(
        self,
        fleet: Fleet,
        plan: FleetPlan,
        tables: FleetTables,
        arrivals: Arrivals,
        routing: RoutingConfig,
        faults: tuple[Fault, ...] = (),
        tick_s: float = 1.0,
        rdma_gbps: float = 800.0,
    ) -> None:
        self.fleet, self.arr, self.faults = fleet, arrivals, faults
        self.tick_s, self.rdma = tick_s, rdma_gbps
        sizes = {p.name: p.n_prfaas for p in plan.pools}
        self.pool_targets = [TargetState.of(p.name, sizes.get(p.name, 0)) for p in fleet.pools]
        self.pools = [
            [_Station(t, tables.pool_seconds[k], k) for _ in t.instances]
            for k, t in enumerate(self.pool_targets)
        ]
        self.clusters = [
            self._cluster(i, plan, tables, routing) for i in range(len(fleet.clusters))
        ]
        n = len(arrivals.time)
        self.first = [math.nan] * n
        self.done = [math.nan] * n
        self.target = [-2] * n
        self.heap: list[tuple[float, int, int, Any]] = []
        self.seq = 0
        self.active = 0
        self.rerouted = 0
        self.now = 0.0
        self.ai = 0  # next arrival

    def _cluster(
        self, i: int, plan: FleetPlan, tables: FleetTables, cfg: RoutingConfig
    ) -> _Cluster:
        spec = self.fleet.clusters[i]
        cp = plan.cluster(spec.name)
        links = {link.pool: link for link in spec.links}
        used = [s.pool for s in cp.shares]
        # the other pools it reaches stand by: taken only while the planned ones are down
        spare = [n for n in links if n not in used] if cp.threshold_tokens is not None else []
        t = cp.threshold_tokens
        routes = [PoolRoute(n, (), links[n].budget_gbps, t) for n in used] + [
            PoolRoute(n, (), links[n].budget_gbps, t, standby=True) for n in spare
        ]
        used += spare
        policy = RoutingPolicy(1, cp.threshold_tokens, tuple(routes))
        router = Router(policy, cp.n_prefill, dict.fromkeys(used, 0), cfg)
        index = [self.fleet.pool_index(name) for name in used]
        for r, k in enumerate(index):  # the pool is one target for every cluster that uses it
            router.live.pools[r].target = self.pool_targets[k]
        c = _Cluster(
            router,
            index,
            [Link(links[name].capacity_gbps, math.inf) for name in used],
            [links[name].rtt_ms for name in used],
        )
        c.local = [
            _Station(router.live.local, tables.local_seconds[i], -1) for _ in range(cp.n_prefill)
        ]
        decode = spec.instance.decode
        assert decode is not None
        c.slots = cp.n_decode * decode.max_batch_size
        c.step = decode.step_seconds
        c.kv = tables.kv_mib
        c.local_seconds = tables.local_seconds[i]
        return c

    # -- events ----------------------------------------------------------------------------
    def _push(self, t: float, kind: int, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, payload))

    def run(self) -> FleetRecord:
        arrival = self.arr.time
        n = len(arrival)
        self._push(0.0, _TICK, None)
        for fault in self.faults:
            self._push(fault.start_s, _FAULT, (fault, True))
            if math.isfinite(fault.end_s):
                self._push(fault.end_s, _FAULT, (fault, False))
        handle: list[Callable[[Any, float], None]] = [
            self._prefilled,
            self._link_event,
            self._to_decode,
            self._decoded,
            lambda _, t: self._tick(t),
            self._fault,
        ]
        heap = self.heap
        while True:
            ai = self.ai
            if ai < n and (not heap or arrival[ai] <= heap[0][0]):
                self.now = arrival[ai]
                self.ai += 1
                self._arrive(ai, self.now)
                continue
            if not heap or (ai >= n and self.active == 0):
                break
            t, _, kind, payload = heapq.heappop(heap)
            self.now = t
            handle[kind](payload, t)
        gbit = {}
        for spec, c in zip(self.fleet.clusters, self.clusters, strict=True):
            for r, link in enumerate(c.links):
                link.advance(self.now)
                gbit[(spec.name, self.fleet.pools[c.routes[r]].name)] = link.delivered
        return FleetRecord(
            arrival, self.arr.cluster, self.first, self.done, self.target, self.now,
            self.rerouted, gbit,
        )  # fmt: skip

    # -- arrival and routing ---------------------------------------------------------------
    def _arrive(self, i: int, now: float) -> None:
        c = self.arr.cluster[i]
        d = self.clusters[c].router.route_hits(self.arr.tokens[i], MISS, ())
        self.target[i] = int(d.target)
        if d.target == Target.REJECT:
            return
        self.active += 1
        self._dispatch(_Req(i, c, d), now)

    def _dispatch(self, r: _Req, now: float) -> None:
        cl = self.clusters[r.c]
        cl.router.dispatched(r.d)
        if r.d.target == Target.POOL:
            r.kv_gbit = mib_to_gbit(cl.kv[r.d.uncached_tokens])
            st = self.pools[cl.routes[r.d.pool]][r.d.instance]
        else:
            st = cl.local[r.d.instance]
        if st.current is None:
            self._start(st, r, now)
        else:
            st.queue.append(r)
            st.target.add_waiting(1)

    def _start(self, st: _Station, r: _Req, now: float) -> None:
        st.current = r
        seconds = st.seconds[r.d.uncached_tokens]
        self._push(now + seconds, _PREFILL, (st, r))
        if st.pool >= 0:
            cap = r.kv_gbit / seconds if seconds > 0 else math.inf
            r.flow = Flow(r.kv_gbit, cap, 0, r, now, now + seconds)
            link = self.clusters[r.c].links[r.d.pool]
            link.advance(now)
            link.flows.append(r.flow)
            self._schedule(link)

    def _release(self, st: _Station, now: float) -> None:
        st.current = None
        if st.queue:
            st.target.add_waiting(-1)
            self._start(st, st.queue.popleft(), now)

    def _prefilled(self, payload: tuple[_Station, _Req], now: float) -> None:
        st, r = payload
        if st.current is not r:
            return  # re-routed away (its pool went down) before it finished
        cl = self.clusters[r.c]
        cl.router.prefilled(r.d)
        if st.pool < 0:
            seconds = st.seconds[r.d.uncached_tokens]
            lag = mib_to_gbit(cl.kv[r.d.uncached_tokens]) / self.rdma - seconds
            self._release(st, now)
            self._deliver(r, now + max(0.0, lag))
            return
        r.computed = True
        if r.sent:
            self._release(st, now)
            self._deliver(r, now + cl.latency[r.d.pool])
        elif r.flow is not None:
            link = cl.links[r.d.pool]
            link.advance(now)
            r.flow.cap = math.inf
            self._schedule(link)

    # -- links -----------------------------------------------------------------------------
    def _schedule(self, link: Link) -> None:
        wake = link.reshare()
        if wake < math.inf:
            self._push(wake, _LINK, (link, link.generation))

    def _link_event(self, payload: tuple[Link, int], now: float) -> None:
        link, generation = payload
        if generation != link.generation:
            return
        link.advance(now)
        for f in link.pop_done():
            r: _Req = f.owner
            r.sent, r.flow = True, None
            if r.computed:
                cl = self.clusters[r.c]
                self._release(self.pools[cl.routes[r.d.pool]][r.d.instance], now)
                self._deliver(r, now + cl.latency[r.d.pool])
        self._schedule(link)

    # -- decode ----------------------------------------------------------------------------
    def _deliver(self, r: _Req, at: float) -> None:
        if at > self.now:
            self._push(at, _DELIVER, r)
        else:
            self._to_decode(r, at)

    def _to_decode(self, r: _Req, now: float) -> None:
        cl = self.clusters[r.c]
        if cl.slots > 0:
            self._begin(cl, r, now)
        else:
            cl.wait.append(r)

    def _begin(self, cl: _Cluster, r: _Req, now: float) -> None:
        cl.slots -= 1
        self.first[r.i] = now + cl.step
        self._push(now + self.arr.output[r.i] * cl.step, _DECODE, r)

    def _decoded(self, r: _Req, now: float) -> None:
        self.done[r.i] = now
        self.active -= 1
        cl = self.clusters[r.c]
        cl.slots += 1
        if cl.wait:
            self._begin(cl, cl.wait.popleft(), now)

    # -- telemetry and faults --------------------------------------------------------------
    def _tick(self, now: float) -> None:
        for cl in self.clusters:
            for r, link in enumerate(cl.links):
                link.advance(now)
                cl.router.meter(r, (link.delivered - cl.metered[r]) * _BYTES_PER_GBIT)
                cl.metered[r] = link.delivered
                live = cl.router.live.pools[r].link
                live.measured(link.capacity, link.in_flight(now) * _BYTES_PER_GBIT)
            cl.router.observe(now)
        if self.active or self.ai < len(self.arr.time):
            self._push(now + self.tick_s, _TICK, None)

    def _fault(self, payload: tuple[Fault, bool], now: float) -> None:
        fault, begins = payload
        if fault.kind == "link":
            name, _, pool = fault.target.partition("/")
            c = next(i for i, s in enumerate(self.fleet.clusters) if s.name == name)
            cl = self.clusters[c]
            k = self.fleet.pool_index(pool)
            if k not in cl.routes:
                return  # the plan sends nothing over this link
            r = cl.routes.index(k)
            link = cl.links[r]
            link.advance(now)
            if not begins:
                spec = next(x for x in self.fleet.clusters[c].links if x.pool == pool)
                link.capacity = spec.capacity_gbps
                self._schedule(link)  # the router sees it back at its next telemetry tick
                return
            link.capacity = 0.0
            cl.router.live.pools[r].link.measured(0.0, 0.0)  # its transfers fail: seen at once
            stuck = [f.owner for f in link.flows]
            link.flows = []
            self._schedule(link)
            for req in stuck:
                self._reroute(req, now)
            return
        k = self.fleet.pool_index(fault.target)
        self.pool_targets[k].set_healthy(not begins)
        if begins:
            self._evacuate(k, now)

    def _evacuate(self, k: int, now: float) -> None:
        """The pool is down: what it held is prefilled again wherever its router now says."""
        lost: list[_Req] = []
        for st in self.pools[k]:
            st.target.add_waiting(-len(st.queue))
            lost += st.queue
            st.queue.clear()
            if st.current is not None:
                lost.append(st.current)
        for r in lost:
            self._reroute(r, now)

    def _reroute(self, r: _Req, now: float) -> None:
        """A pool prefill that cannot complete (pool down, KV transfer failed): its instance is
        freed and its cluster's router places it again, as the HTTP router re-prefills."""
        cl = self.clusters[r.c]
        st = self.pools[cl.routes[r.d.pool]][r.d.instance]
        if not r.computed:
            cl.router.prefilled(r.d)  # its load leaves the instance
        if r.flow is not None:
            link = cl.links[r.d.pool]
            link.advance(now)
            link.flows = [f for f in link.flows if f is not r.flow]
            self._schedule(link)
            r.flow = None
        if st.current is r:
            self._release(st, now)
        d = cl.router.route_hits(self.arr.tokens[r.i], MISS, ())
        self.target[r.i] = int(d.target)
        self.rerouted += 1
        if d.target == Target.REJECT:
            self.active -= 1
            return
        self._dispatch(_Req(r.i, r.c, d), now)


@dataclass(frozen=True)
class FleetTables:
    """Per-token lookups: each pool's and each cluster's prefill seconds, KV MiB."""

    pool_seconds: list[list[float]]
    local_seconds: list[list[float]]
    kv_mib: list[float]


def fleet_tables(fleet: Fleet, max_tokens: int) -> FleetTables:
    top = max([max_tokens] + [c.workload.input_length.max_tokens for c in fleet.clusters])
    x = np.arange(0, top + 1, dtype=np.float64)
    x[0] = 1.0
    pools = [p.instance.prefill.curve(top)(x).tolist() for p in fleet.pools]
    local = [c.instance.prefill.curve(top)(x).tolist() for c in fleet.clusters]
    kv = fleet.model.kv_cache.curve(top)(x).tolist()
    return FleetTables(pools, local, kv)
