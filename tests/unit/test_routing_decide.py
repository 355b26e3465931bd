"""Every rule of ``prfaas.routing.decide`` (paper §3.3, §3.4.3), including fail-open."""

from __future__ import annotations

import pytest

from prfaas.routing import (
    AdaptationConfig,
    LinkState,
    LiveState,
    Mode,
    PoolRoute,
    PoolState,
    PrefixHit,
    Reason,
    RoutingConfig,
    RoutingPolicy,
    Target,
    TargetState,
    choose_instance,
    decide,
)
from prfaas.routing.state import InstanceState

T = 20_000
MISS = PrefixHit(0)


def policy(*pools: str, t: int | None = T) -> RoutingPolicy:
    names = pools or ("pool",)
    return RoutingPolicy(9, t, tuple(PoolRoute(n, (), 100.0) for n in names))


def live(
    pools: int = 1, local: int = 2, pool_instances: int = 2, mode: Mode = Mode.SCARCE
) -> LiveState:
    return LiveState(
        TargetState.of("local", local),
        [
            PoolState(TargetState.of(f"pool{i}", pool_instances), LinkState(f"l{i}", 100.0), mode)
            for i in range(pools)
        ],
    )


STATIC = RoutingConfig.static()
ADAPTIVE = RoutingConfig()


def test_offload_iff_uncached_length_exceeds_t() -> None:
    s = live()
    at = decide(T, MISS, [MISS], policy(), s, STATIC)
    above = decide(T + 1, MISS, [MISS], policy(), s, STATIC)
    assert (at.target, at.reason) == (Target.LOCAL, Reason.SHORT)
    assert (above.target, above.reason) == (Target.POOL, Reason.LONG)
    assert above.uncached_tokens == T + 1 and above.transfer_tokens == 0
    assert above.policy_version == 9 and above.threshold_tokens == T


def test_no_threshold_or_no_pool_means_local() -> None:
    s = live()
    for p in (policy(t=None), RoutingPolicy(1, T, ())):
        d = decide(100_000, MISS, [MISS], p, s, ADAPTIVE)
        assert (d.target, d.reason) == (Target.LOCAL, Reason.NO_OFFLOAD)


def test_scarce_mode_judges_each_cluster_cache_on_its_own() -> None:
    s = live(mode=Mode.SCARCE)
    # local cache brings the increment under t: local, even though the pool caches more
    d = decide(50_000, PrefixHit(35_000), [PrefixHit(45_000)], policy(), s, ADAPTIVE)
    assert (d.target, d.cached_tokens, d.uncached_tokens) == (Target.LOCAL, 35_000, 15_000)
    # local increment above t: the pool, with the pool's own cache, nothing moved across
    d = decide(50_000, PrefixHit(10_000), [PrefixHit(45_000)], policy(), s, ADAPTIVE)
    assert (d.target, d.cached_tokens, d.uncached_tokens) == (Target.POOL, 45_000, 5_000)
    assert d.transfer_tokens == 0 and d.mode == Mode.SCARCE
    # and a pool without the prefix recomputes it there
    d = decide(50_000, PrefixHit(10_000), [MISS], policy(), s, ADAPTIVE)
    assert (d.target, d.uncached_tokens, d.transfer_tokens) == (Target.POOL, 50_000, 0)


def test_abundant_mode_uses_the_best_cache_anywhere_and_moves_it() -> None:
    s = live(mode=Mode.ABUNDANT)
    # pool holds the longer prefix and the increment is short: local prefill, pool → PD copy
    d = decide(50_000, PrefixHit(10_000), [PrefixHit(45_000)], policy(), s, ADAPTIVE)
    assert (d.target, d.cached_tokens, d.uncached_tokens) == (Target.LOCAL, 45_000, 5_000)
    assert d.transfer_tokens == 45_000 and d.mode == Mode.ABUNDANT
    # PD holds the longer prefix but the increment is long: pool prefill, PD → pool copy
    d = decide(90_000, PrefixHit(40_000), [PrefixHit(8_000)], policy(), s, ADAPTIVE)
    assert (d.target, d.cached_tokens, d.uncached_tokens) == (Target.POOL, 40_000, 50_000)
    assert d.transfer_tokens == 40_000
    # the compute cluster already has the longer cache: no copy
    d = decide(50_000, PrefixHit(40_000), [PrefixHit(8_000)], policy(), s, ADAPTIVE)
    assert (d.target, d.transfer_tokens) == (Target.LOCAL, 0)
    d = decide(90_000, PrefixHit(8_000), [PrefixHit(40_000)], policy(), s, ADAPTIVE)
    assert (d.target, d.cached_tokens, d.transfer_tokens) == (Target.POOL, 40_000, 0)


def test_static_config_ignores_mode_and_threshold_factor() -> None:
    s = live(mode=Mode.ABUNDANT)
    s.pools[0].factor = 3.0
    d = decide(50_000, PrefixHit(10_000), [PrefixHit(45_000)], policy(), s, STATIC)
    assert (d.target, d.mode, d.transfer_tokens) == (Target.POOL, Mode.SCARCE, 0)
    assert d.threshold_tokens == T


def test_effective_threshold_follows_the_factor() -> None:
    s = live()
    s.pools[0].factor = 2.0
    d = decide(30_000, MISS, [MISS], policy(), s, ADAPTIVE)
    assert (d.target, d.threshold_tokens) == (Target.LOCAL, 2 * T)
    s.pools[0].factor = 0.5
    d = decide(15_000, MISS, [MISS], policy(), s, ADAPTIVE)
    assert (d.target, d.threshold_tokens) == (Target.POOL, T // 2)


@pytest.mark.parametrize("broken", ["pool", "instances", "link-health", "link-capacity"])
def test_fail_open_to_local_never_drop(broken: str) -> None:
    s = live()
    ps = s.pools[0]
    if broken == "pool":
        ps.target.set_healthy(False)
    elif broken == "instances":
        for k in range(len(ps.target.instances)):
            ps.target.set_healthy(False, instance=k)
    elif broken == "link-health":
        ps.link.set_healthy(False)
    else:
        ps.link.capacity_gbps = 0.0
    for config in (STATIC, ADAPTIVE):
        d = decide(100_000, MISS, [MISS], policy(), s, config)
        assert (d.target, d.reason) == (Target.LOCAL, Reason.FAIL_OPEN)
        assert d.instance >= 0
    assert decide(1_000, MISS, [MISS], policy(), s, STATIC).reason == Reason.SHORT


def test_no_local_instance_goes_to_the_pool_and_only_nothing_rejects() -> None:
    s = live()
    for inst in s.local.instances:
        s.local.set_healthy(False, instance=inst.name)
    d = decide(1_000, MISS, [MISS], policy(), s, STATIC)
    assert (d.target, d.reason) == (Target.POOL, Reason.NO_LOCAL)
    s.pools[0].target.set_healthy(False)
    d = decide(1_000, MISS, [MISS], policy(), s, STATIC)
    assert (d.target, d.reason, d.instance) == (Target.REJECT, Reason.REJECTED, -1)


def test_backlog_guard_keeps_offloads_local_when_adaptive() -> None:
    s = live()
    link = s.pools[0].link
    link.sent(100e9 / 8 * (ADAPTIVE.adapt.max_backlog_s + 1))  # > max backlog
    d = decide(100_000, MISS, [MISS], policy(), s, ADAPTIVE)
    assert (d.target, d.reason) == (Target.LOCAL, Reason.BACKLOG)
    assert decide(100_000, MISS, [MISS], policy(), s, STATIC).target == Target.POOL
    off = RoutingConfig(adapt=AdaptationConfig(enabled=False))
    assert decide(100_000, MISS, [MISS], policy(), s, off).target == Target.POOL


def test_several_pools_longest_cache_then_shortest_queue_skipping_broken() -> None:
    s = live(pools=3)
    p = policy("pool0", "pool1", "pool2")
    s.pools[0].target.set_waiting(5)
    s.pools[1].target.set_waiting(1)
    s.pools[2].target.set_waiting(3)
    d = decide(100_000, MISS, [MISS, MISS, MISS], p, s, STATIC)
    assert d.pool == 1  # equal caches: shortest queue
    d = decide(100_000, MISS, [PrefixHit(512), MISS, PrefixHit(4096)], p, s, STATIC)
    assert (d.pool, d.cached_tokens) == (2, 4096)  # longest cache first
    s.pools[2].link.set_healthy(False)
    d = decide(100_000, MISS, [PrefixHit(512), MISS, PrefixHit(4096)], p, s, STATIC)
    assert d.pool == 0


def test_instance_choice_cache_affine_first_then_least_loaded() -> None:
    insts = [InstanceState(f"i{k}", load) for k, load in enumerate([5000.0, 1000.0, 3000.0])]
    assert choose_instance(insts, -1, 4096) == 1  # no affinity: least loaded
    assert choose_instance(insts, 2, 4096) == 2  # affine within slack of the least loaded
    assert choose_instance(insts, 0, 1000) == 1  # affine but too loaded
    insts[2].healthy = False
    assert choose_instance(insts, 2, 4096) == 1  # affine but unhealthy
    for inst in insts:
        inst.healthy = False
    assert choose_instance(insts, 0, 4096) == -1


def test_decide_picks_the_affine_instance_of_the_chosen_cluster() -> None:
    s = live(local=3, pool_instances=3)
    d = decide(10_000, PrefixHit(4096, 2), [MISS], policy(), s, STATIC)
    assert (d.target, d.instance) == (Target.LOCAL, 2)
    d = decide(90_000, MISS, [PrefixHit(8192, 1)], policy(), s, STATIC)
    assert (d.target, d.instance) == (Target.POOL, 1)


def test_missing_pool_hits_count_as_no_cache() -> None:
    d = decide(50_000, MISS, [], policy(), live(), STATIC)
    assert (d.target, d.cached_tokens) == (Target.POOL, 0)


# -- several pools, each with its own threshold (fleet plans) ----------------------------------


def per_pool(*thresholds: int | None, t: int | None = None) -> RoutingPolicy:
    return RoutingPolicy(
        3,
        t,
        tuple(PoolRoute(f"pool{i}", (), 100.0, th) for i, th in enumerate(thresholds)),
    )


def test_each_pool_offloads_above_its_own_threshold() -> None:
    s = live(pools=2)
    p = per_pool(30_000, 10_000)
    d = decide(20_000, MISS, [MISS, MISS], p, s, STATIC)
    assert (d.target, d.pool, d.threshold_tokens) == (Target.POOL, 1, 10_000)
    s.pools[1].target.set_waiting(4)  # pool1 busier, but pool0 does not take 20K prompts
    assert decide(20_000, MISS, [MISS, MISS], p, s, STATIC).pool == 1
    assert decide(40_000, MISS, [MISS, MISS], p, s, STATIC).pool == 0  # both take it: the queue
    d = decide(9_000, MISS, [MISS, MISS], p, s, STATIC)
    assert (d.target, d.reason) == (Target.LOCAL, Reason.SHORT)


def test_a_pool_without_a_threshold_is_not_used_unless_the_policy_has_one() -> None:
    s = live(pools=2)
    d = decide(90_000, MISS, [MISS, MISS], per_pool(None, 10_000), s, STATIC)
    assert d.pool == 1
    s.pools[1].target.set_waiting(9)
    assert decide(90_000, MISS, [MISS, MISS], per_pool(None, 10_000), s, STATIC).pool == 1
    assert decide(90_000, MISS, [MISS, MISS], per_pool(None, 10_000, t=50_000), s, STATIC).pool == 0
    d = decide(90_000, MISS, [MISS, MISS], per_pool(None, None), s, STATIC)
    assert d.reason == Reason.NO_OFFLOAD


def test_cache_first_then_link_headroom_then_queue() -> None:
    s = live(pools=3)
    p = per_pool(T, T, T)
    s.pools[0].link.egress_gbps = 95.0  # no headroom (≥ raise_utilisation of 100)
    s.pools[1].target.set_waiting(3)
    s.pools[2].target.set_waiting(6)
    hits = [MISS, MISS, MISS]
    assert decide(90_000, MISS, hits, p, s, ADAPTIVE).pool == 1  # 0 is hot; 1 has the shorter queue
    s.pools[1].link.egress_gbps = 99.0
    assert decide(90_000, MISS, hits, p, s, ADAPTIVE).pool == 2  # only 2 has headroom
    hits = [PrefixHit(8192), MISS, MISS]
    d = decide(90_000, MISS, hits, p, s, ADAPTIVE)
    assert (d.pool, d.cached_tokens) == (0, 8192)  # the cache wins over a hot link


def test_a_backlogged_pool_is_skipped_for_another_one() -> None:
    s = live(pools=2)
    p = per_pool(T, T)
    s.pools[0].link.sent(100e9 / 8 * (ADAPTIVE.adapt.max_backlog_s + 1))
    s.pools[0].target.set_waiting(0)
    s.pools[1].target.set_waiting(5)
    assert decide(90_000, MISS, [MISS, MISS], p, s, ADAPTIVE).pool == 1
    s.pools[1].link.sent(100e9 / 8 * (ADAPTIVE.adapt.max_backlog_s + 1))
    d = decide(90_000, MISS, [MISS, MISS], p, s, ADAPTIVE)
    assert (d.target, d.reason) == (Target.LOCAL, Reason.BACKLOG)


def test_fail_open_per_pool() -> None:
    s = live(pools=2)
    p = per_pool(10_000, 30_000)
    s.pools[0].link.set_healthy(False)
    d = decide(20_000, MISS, [MISS, MISS], p, s, STATIC)
    assert (d.target, d.reason) == (Target.LOCAL, Reason.SHORT)  # pool1 would not take 20K
    assert decide(40_000, MISS, [MISS, MISS], p, s, STATIC).pool == 1
    s.pools[1].target.set_healthy(False)
    d = decide(20_000, MISS, [MISS, MISS], p, s, STATIC)
    assert (d.target, d.reason) == (Target.LOCAL, Reason.FAIL_OPEN)  # above pool0's t


def test_standby_pools_are_used_only_while_every_primary_pool_is_down() -> None:
    s = live(pools=2)
    p = RoutingPolicy(
        4, T, (PoolRoute("pool0", (), 100.0), PoolRoute("pool1", (), 100.0, None, True))
    )
    s.pools[0].target.set_waiting(9)  # busier, but primary
    assert decide(90_000, MISS, [MISS, MISS], p, s, STATIC).pool == 0
    s.pools[0].link.set_healthy(False)
    d = decide(90_000, MISS, [MISS, MISS], p, s, STATIC)
    assert (d.target, d.pool, d.reason) == (Target.POOL, 1, Reason.LONG)
    s.pools[1].target.set_healthy(False)
    d = decide(90_000, MISS, [MISS, MISS], p, s, STATIC)
    assert (d.target, d.reason) == (Target.LOCAL, Reason.FAIL_OPEN)
