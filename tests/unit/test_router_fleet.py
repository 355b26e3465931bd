"""The HTTP router's fleet: the routing core follows the policy's endpoints, scraped health and
queues reach it, failed links come back after the retry time, and a decode engine's in-flight
count cannot leak."""

from __future__ import annotations

import pytest

from prfaas.router.fleet import Engine, Fleet
from prfaas.routing import PoolRoute, RoutingPolicy


def policy(version: int = 1, local: tuple[str, ...] = ("http://l0", "http://l1")) -> RoutingPolicy:
    pool = PoolRoute("pool", ("http://p0", "http://p1", "not a url"), 100.0)
    return RoutingPolicy(version, 19_400, (pool,), local, ("http://d0",))


def test_the_core_follows_the_endpoints_and_scraped_health() -> None:
    fleet = Fleet(link_retry_s=5.0)
    assert fleet.apply(policy()) == ["not a url"]
    live = fleet.core.live
    assert [i.name for i in live.local.instances] == ["http://l0", "http://l1"]
    assert [i.name for i in live.pools[0].target.instances] == ["http://p0", "http://p1"]
    fleet.engines["http://p1"].waiting = 3.0
    fleet.engines["http://p0"].waiting = 2.0
    fleet.engine_failed("http://l1")
    assert [i.healthy for i in live.local.instances] == [True, False]
    assert live.pools[0].target.waiting == 5
    fleet.apply(policy(2, local=("http://l1", "http://l2")))
    assert [i.name for i in live.local.instances] == ["http://l1", "http://l2"]
    assert [i.healthy for i in live.local.instances] == [False, True]


def test_a_failed_link_is_routed_around_until_the_retry_time() -> None:
    fleet = Fleet(link_retry_s=5.0)
    fleet.apply(policy())
    fleet.link_failed(0, now=100.0)
    link = fleet.core.live.pools[0].link
    fleet.sync_health(104.0)
    assert not link.healthy
    fleet.sync_health(105.0)
    assert link.healthy


def test_a_decode_engine_counts_in_flight_requests_and_releases_on_errors() -> None:
    e = Engine("http://d0")
    with e:
        with e:
            assert e.active == 2
        assert e.active == 1
    with pytest.raises(RuntimeError), e:
        raise RuntimeError
    assert e.active == 0
