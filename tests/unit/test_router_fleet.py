"""The HTTP router's fleet: the routing core follows the policy's endpoints, scraped health and
queues reach it, failed links stay down until a probe says otherwise, decode choice counts the
router's own requests from the pick, waits on a hung engine end, and in-flight counts cannot
leak."""

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


def test_a_failed_link_stays_down_until_a_probe_carries_kv() -> None:
    fleet = Fleet(link_retry_s=5.0)
    fleet.apply(policy())
    fleet.link_failed(0, now=100.0)
    link = fleet.core.live.pools[0].link
    assert fleet.links_due(104.0) == [] and not link.healthy  # not yet time to probe
    assert fleet.links_due(105.0) == ["pool"]
    fleet.sync_health()
    assert not link.healthy  # time alone brings nothing back: clients never probe
    fleet.link_probed("pool", False, now=105.0)
    assert fleet.links_due(109.0) == [] and fleet.links_due(110.0) == ["pool"]
    fleet.link_probed("pool", True)
    assert link.healthy and fleet.links_due(1e9) == []


def test_decode_choice_counts_own_requests_from_the_pick_and_spreads_ties() -> None:
    fleet = Fleet()
    fleet.apply(RoutingPolicy(1, None, (), ("http://l0",), ("http://d0", "http://d1")))
    picked = []
    for _ in range(40):  # a burst: every pick is entered before the next, no scrape between
        e = fleet.pick_decode()
        assert e is not None
        e.__enter__()
        picked.append(e.url)
    assert abs(picked.count("http://d0") - picked.count("http://d1")) <= 1
    for e in fleet.decode:  # others' load, as scraped, counts too
        e.active = 0
    fleet.engines["http://d0"].others = 3.0
    assert [fleet.pick_decode().url for _ in range(3)] == ["http://d1"] * 3  # type: ignore[union-attr]
    assert fleet.pick_decode(avoid=["http://d1"]).url == "http://d0"  # type: ignore[union-attr]
    fleet.engines["http://d0"].healthy = False  # avoided or not, the only healthy one
    assert fleet.pick_decode(avoid=["http://d1"]).url == "http://d1"  # type: ignore[union-attr]
    fleet.engines["http://d1"].healthy = False
    assert fleet.pick_decode() is None and not fleet.has_decode()


def test_a_hung_engine_ends_the_waits_on_it() -> None:
    e, ended = Engine("http://p0"), []
    with e.watching(lambda: ended.append("a")), e.watching(lambda: ended.append("b")):
        pass  # a wait that ended on its own is no longer on it
    with e.watching(lambda: ended.append("c")):
        e.hung()
    assert ended == ["c"] and not e.healthy and not e.waits


def test_a_decode_engine_counts_in_flight_requests_and_releases_on_errors() -> None:
    e = Engine("http://d0")
    with e:
        with e:
            assert e.active == 2
        assert e.active == 1
    with pytest.raises(RuntimeError), e:
        raise RuntimeError
    assert e.active == 0
