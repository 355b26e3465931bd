"""How callers change the routing core's live state: in-flight blocks that cannot leak counts,
prefixes recorded in the index of the cluster that computed them, policies followed by
endpoint, health, queue depths and failed links."""

from __future__ import annotations

import math

import pytest

from prfaas.routing import (
    Decision,
    LinkState,
    Mode,
    PoolRoute,
    PrefixIndex,
    Reason,
    Router,
    RoutingConfig,
    RoutingPolicy,
    Target,
    TargetState,
)

HASHES = [11, 12, 13, 14]  # four full blocks
TOKENS = 4 * 512 + 100


def decision(target: Target, pool: int = -1, instance: int = 0, uncached: int = 5000) -> Decision:
    return Decision(target, pool, instance, 0, uncached, 0, None, Mode.SCARCE, Reason.LONG, 1)


def two_pools() -> tuple[Router, dict[str, PrefixIndex], PrefixIndex]:
    """Pools listed "b" then "a" in the policy, indexes handed over by name: position 0 is "b"."""
    indexes = {"a": PrefixIndex(), "b": PrefixIndex()}
    local = PrefixIndex()
    policy = RoutingPolicy(1, 1000, (PoolRoute("b", (), 100.0), PoolRoute("a", (), 100.0)))
    return Router(policy, 2, {"a": 3, "b": 3}, None, local, indexes), indexes, local


class BoomError(Exception):
    pass


def test_in_flight_loads_the_instance_and_releases_it_on_an_exception() -> None:
    router, indexes, local = two_pools()
    d = decision(Target.POOL, pool=1, instance=2)
    inst = router.live.pools[1].target.instances[2]
    with pytest.raises(BoomError), router.in_flight(d, HASHES, TOKENS):
        assert inst.load == 5000
        raise BoomError
    assert inst.load == 0
    assert len(indexes["a"]) == len(indexes["b"]) == len(local) == 0  # nothing was computed


def test_in_flight_records_the_prefix_in_the_pool_at_the_decision_s_position() -> None:
    router, indexes, local = two_pools()
    d = decision(Target.POOL, pool=1, instance=2)  # position 1 is pool "a"
    with router.in_flight(d, HASHES, TOKENS):
        pass
    assert router.live.pools[1].target.instances[2].load == 0
    assert indexes["a"].match(HASHES, TOKENS).tokens == 4 * 512
    assert indexes["a"].match(HASHES, TOKENS).instance == 2
    assert len(indexes["b"]) == len(local) == 0
    local_d = decision(Target.LOCAL, instance=1)
    with router.in_flight(local_d, HASHES, TOKENS):
        assert router.live.local.instances[1].load == 5000
    assert local.match(HASHES, TOKENS).instance == 1 and len(indexes["b"]) == 0


def test_prefilled_releases_and_records_by_position() -> None:
    router, indexes, local = two_pools()
    d = decision(Target.POOL, pool=0, instance=1)  # position 0 is pool "b"
    router.dispatched(d)
    assert router.live.pools[0].target.instances[1].load == 5000
    router.prefilled(d, HASHES, TOKENS)
    assert router.live.pools[0].target.instances[1].load == 0
    assert indexes["b"].match(HASHES, TOKENS).instance == 1 and len(indexes["a"]) == 0
    router.prefilled(decision(Target.LOCAL))  # no hashes: only the load, never negative
    assert router.live.local.instances[0].load == 0 and len(local) == 0


def test_a_rejection_holds_nothing() -> None:
    router, indexes, local = two_pools()
    with router.in_flight(decision(Target.REJECT, instance=-1), HASHES, TOKENS):
        pass
    with router.kv_in_flight(decision(Target.REJECT, instance=-1), 1e6):
        pass
    assert len(indexes["a"]) == len(indexes["b"]) == len(local) == 0
    assert all(ps.link.bytes_in_flight == 0 for ps in router.live.pools)


def test_a_policy_swapped_in_during_a_prefill_cannot_misdirect_the_release() -> None:
    router = Router(RoutingPolicy(), 0, {})
    router.follow(RoutingPolicy(1, 1000, (), ("http://x", "http://y")))
    d = decision(Target.LOCAL, instance=1)
    with router.in_flight(d):
        router.follow(RoutingPolicy(1, 1000, (), ("http://y", "http://x")))  # reordered
        assert router.live.local.instances[0].load == 5000  # y moved, its load with it
    assert [i.load for i in router.live.local.instances] == [0, 0]


def test_kv_in_flight_meters_and_releases_even_on_an_exception() -> None:
    router, _, _ = two_pools()
    d = decision(Target.POOL, pool=1)
    link = router.live.pools[1].link
    router.observe(0.0)
    with router.kv_in_flight(d, 5e9):
        assert link.bytes_in_flight == 5e9
    with pytest.raises(BoomError), router.kv_in_flight(d, 5e9):
        raise BoomError
    assert link.bytes_in_flight == 0
    with router.kv_in_flight(decision(Target.LOCAL), 5e9):  # no link crossed
        assert link.bytes_in_flight == 0
    router.observe(1.0)
    assert link.egress_gbps > 0 and router.live.pools[0].link.egress_gbps == 0  # 10 GB metered


def test_follow_resizes_to_the_endpoints_and_keeps_state_by_endpoint() -> None:
    router = Router(RoutingPolicy(), 0, {}, RoutingConfig())
    one = RoutingPolicy(1, 1000, (PoolRoute("p", ("p0", "p1"), 10.0),), ("a", "b", "c"))
    router.follow(one)
    local = router.live.local
    assert [i.name for i in local.instances] == ["a", "b", "c"]
    b = local.instances[1]
    router.dispatched(decision(Target.LOCAL, instance=1, uncached=700))
    local.set_healthy(False, instance="b")
    two = RoutingPolicy(
        2, 1000, (PoolRoute("q", ("q0",), 10.0), PoolRoute("p", ("p1",), 10.0)), ("b", "d")
    )
    router.follow(two)
    assert local is router.live.local
    assert [i.name for i in local.instances] == ["b", "d"]
    assert local.instances[0] is b and b.load == 700.0 and not b.healthy
    assert local.instances[1].load == 0 and local.instances[1].healthy
    assert [[i.name for i in ps.target.instances] for ps in router.live.pools] == [["q0"], ["p1"]]
    assert all(ix is not None for ix in router.pool_indexes)  # the new pool has an index too
    router.prefilled(decision(Target.POOL, pool=0), HASHES, TOKENS)
    assert router.lookup(HASHES, TOKENS)[1][0].tokens == 4 * 512


def test_follow_gives_a_repeated_endpoint_its_own_instance() -> None:
    target = TargetState.of("t", 0)
    target.follow(["a", "a"])
    assert target.instances[0] is not target.instances[1]


def test_health_by_position_name_or_the_whole_target_and_queue_depths() -> None:
    target = TargetState.of("t", 3)
    target.set_healthy(False, instance=0)
    target.set_healthy(False, instance="t-2")
    assert [i.healthy for i in target.instances] == [False, True, False]
    assert target.healthy_instances() == 1
    target.set_healthy(False)
    assert target.healthy_instances() == 0
    target.set_healthy(True)
    target.set_waiting(4)
    target.add_waiting(1)
    target.add_waiting(-3)
    assert target.waiting == 2 and target.queue_per_instance() == 2.0


def test_a_failed_link_reopens_after_its_retry_time() -> None:
    router, _, _ = two_pools()
    router.link_failed(0, retry_at=10.0)
    assert not router.live.pools[0].usable() and router.live.pools[1].usable()
    router.reopen_links(9.9)
    assert not router.live.pools[0].link.healthy
    router.reopen_links(10.0)
    assert router.live.pools[0].usable()


def test_a_measured_link_replaces_the_router_s_accounting() -> None:
    link = LinkState("l", 100.0)
    link.sent(1e9)
    link.measured(0.0, 2e9)
    assert not link.healthy and link.bytes_in_flight == 2e9 and math.isinf(link.utilisation())
    link.measured(40.0, 0.0)
    assert link.healthy and link.usable_gbps() == 40.0 and link.backlog_seconds() == 0
    link.landed(1.0)  # never below zero
    assert link.bytes_in_flight == 0
