"""The link's load from the pool side: parsing the engines' series, counter resets, the blend
with a router's own bytes since the reading, and the engine's pending bytes."""

from __future__ import annotations

import asyncio
import math

import pytest

from prfaas.engine.kv import KVServer, KVStore, fetch
from prfaas.router import linkload
from prfaas.router.fleet import Engine, Fleet
from prfaas.routing.decide import Decision, Reason, Target
from prfaas.routing.policy import PoolRoute, RoutingPolicy
from prfaas.routing.state import LinkState, Mode

EXPOSITION = """# HELP prfaas_engine_kv_offered_bytes_total nominal KV bytes offered to decode
# TYPE prfaas_engine_kv_offered_bytes_total counter
prfaas_engine_kv_offered_bytes_total 3e+09
prfaas_engine_kv_offered_bytes_created 1.7e+09
prfaas_engine_kv_pending_bytes 5e+08
prfaas_engine_kv_sent_bytes_total 12.0
"""


def test_parse_reads_both_series_and_none_when_absent() -> None:
    assert linkload.parse(EXPOSITION) == (3e9, 5e8)
    assert linkload.parse("vllm:num_requests_waiting 0\n") == (None, None)


def test_read_counts_increases_and_a_restarted_counter_whole() -> None:
    e = Engine("http://p:1")
    linkload.read(e, "prfaas_engine_kv_offered_bytes_total 100\nprfaas_engine_kv_pending_bytes 7\n")
    assert (e.kv_new, e.kv_pending) == (0.0, 7.0)  # a first reading is the baseline
    linkload.read(e, "prfaas_engine_kv_offered_bytes_total 160\nprfaas_engine_kv_pending_bytes 0\n")
    assert e.kv_new == 60.0
    linkload.read(e, "prfaas_engine_kv_offered_bytes_total 25\nprfaas_engine_kv_pending_bytes 0\n")
    assert e.kv_new == 25.0  # the engine restarted
    linkload.forget(e)
    assert (e.kv_new, e.kv_pending) == (0.0, None)


def test_a_pool_reading_sums_the_engines_that_reported() -> None:
    a, b, c = Engine("http://a:1"), Engine("http://b:1"), Engine("http://c:1")
    a.kv_new, a.kv_pending = 10.0, 1.0
    b.kv_new, b.kv_pending = 5.0, 2.0
    assert linkload.pool_reading([a, b, c]) == (15.0, 3.0)  # c did not answer
    assert linkload.pool_reading([c]) == (None, None)  # nobody: own accounting


def test_in_flight_is_the_reading_plus_own_bytes_since() -> None:
    link = LinkState("p", 100.0)
    link.sent(4e9)
    assert link.in_flight() == 4e9  # no reading yet: own
    link.report(10e9)  # every replica's bytes, ours of before included
    assert link.in_flight() == 10e9
    link.sent(1e9)
    assert link.in_flight() == 11e9
    link.landed(4e9)  # ours of before landed: the reading still holds them until the next one
    link.landed(1e9)
    assert link.in_flight() == 10e9
    link.report(None)
    assert link.in_flight() == 0.0  # back to own accounting
    assert LinkState("q", 8.0).backlog_seconds() == 0.0


def fleet_with_pool() -> Fleet:
    fleet = Fleet()
    pool = PoolRoute("p", ("http://pool:1",), link_budget_gbps=80.0)
    fleet.apply(RoutingPolicy(1, 1000, (pool,), ("http://local:1",), ("http://decode:1",)))
    return fleet


def test_egress_comes_from_the_pool_side_when_it_reports() -> None:
    """Three replicas each send a third; each sees the whole link from the pool side."""
    fleet = fleet_with_pool()
    core = fleet.core
    d = Decision(Target.POOL, 0, 0, 0, 10_000, 0, 1000, Mode.SCARCE, Reason.LONG, 1)
    core.observe(0.0)
    with core.kv_in_flight(d, 1e9):  # this replica's third: 8 Gbit in 1 s
        pass
    core.reported(0, 3e9, 0.0)  # the pool offered 24 Gbit in that second
    core.observe(1.0)
    link = core.live.pools[0].link
    weight = 1 - math.exp(-1 / core.config.adapt.utilisation_window_s)
    assert link.egress_gbps == pytest.approx(24.0 * weight)  # not 8: the whole link
    with core.kv_in_flight(d, 1e9):
        pass
    core.observe(2.0)  # no reading this round: its own bytes count
    assert link.egress_gbps == pytest.approx(24.0 * weight + (8.0 - 24.0 * weight) * weight)


def test_report_reads_each_pools_engines() -> None:
    fleet = fleet_with_pool()
    e = fleet.engines["http://pool:1"]
    linkload.read(e, "prfaas_engine_kv_offered_bytes_total 0\nprfaas_engine_kv_pending_bytes 9\n")
    linkload.report(fleet)
    assert fleet.core.live.pools[0].link.in_flight() == 9.0


def test_the_engines_pending_bytes_are_stored_or_sending_and_drop_when_sent() -> None:
    async def main() -> None:
        store = KVStore()
        server = KVServer(store, wait_s=1.0)
        await server.start("127.0.0.1", 0)
        assert server._server is not None
        port = server._server.sockets[0].getsockname()[1]
        store.put("a", 300_000)
        assert store.offered(10.0) == 300_000
        assert store.offered(0.0) == 0  # older than that: orphaned, off the link
        assert await fetch("127.0.0.1", port, "a", 5.0) == 300_000
        assert store.offered(10.0) == 0 and server.sending == 0
        await server.stop()

    asyncio.run(main())
