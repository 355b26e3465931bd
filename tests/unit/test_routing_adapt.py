"""The short-timescale loop: scarce/abundant hysteresis and the effective threshold."""

from __future__ import annotations

import math

import pytest

from prfaas.routing import (
    AdaptationConfig,
    Adapter,
    LinkState,
    LiveState,
    Mode,
    ModeThresholds,
    PoolRoute,
    PoolState,
    Router,
    RoutingConfig,
    RoutingPolicy,
    TargetState,
)

CFG = RoutingConfig()
A = CFG.adapt


def state(u: float = 0.0, pool_waiting: int = 0, local_waiting: int = 0) -> LiveState:
    link = LinkState("l", 100.0)
    link.egress_gbps = u * 100.0
    pool = TargetState.of("pool", 4)
    pool.set_waiting(pool_waiting)
    local = TargetState.of("local", 3)
    local.set_waiting(local_waiting)
    return LiveState(local, [PoolState(pool, link, Mode.ABUNDANT)])


def run(adapter: Adapter, live: LiveState, seconds: int) -> float:
    for now in range(seconds):
        adapter.observe(float(now), live)
    return live.pools[0].factor


def test_mode_hysteresis_on_utilisation() -> None:
    m = ModeThresholds()
    s = state(u=m.scarce_utilisation - 0.01)
    adapter = Adapter(CFG)
    adapter.observe(0, s)
    assert s.pools[0].mode == Mode.ABUNDANT
    s.pools[0].link.egress_gbps = m.scarce_utilisation * 100
    adapter.observe(1, s)
    assert s.pools[0].mode == Mode.SCARCE
    s.pools[0].link.egress_gbps = (m.abundant_utilisation + 0.05) * 100  # inside the band
    adapter.observe(2, s)
    assert s.pools[0].mode == Mode.SCARCE
    s.pools[0].link.egress_gbps = m.abundant_utilisation * 100
    adapter.observe(3, s)
    assert s.pools[0].mode == Mode.ABUNDANT


def test_mode_turns_scarce_on_a_pool_queue_surge() -> None:
    s = state(pool_waiting=4 * 2)  # 2 per instance = scarce_queue
    Adapter(CFG).observe(0, s)
    assert s.pools[0].mode == Mode.SCARCE


def test_hot_link_raises_the_threshold_up_to_the_cap_at_the_interval() -> None:
    s = state(u=0.95)
    adapter = Adapter(CFG)
    adapter.observe(0.0, s)
    adapter.observe(0.5, s)  # within the interval: no second step
    assert s.pools[0].factor == pytest.approx(A.step_up)
    assert run(adapter, s, 200) == A.max_factor


def test_link_backlog_also_raises() -> None:
    s = state()
    s.pools[0].link.sent(100e9 / 8 * (A.raise_backlog_s + 0.5))
    Adapter(CFG).observe(0, s)
    assert s.pools[0].factor > 1


def test_pool_queue_surge_raises_only_while_local_idles() -> None:
    s = state(pool_waiting=4 * 3)
    assert run(Adapter(CFG), s, 3) > 1
    both = state(pool_waiting=4 * 3, local_waiting=3 * 3)  # a burst beyond both: hold the plan
    both.pools[0].factor = 2.0
    assert run(Adapter(CFG), both, 400) == 1.0


def test_local_surge_lowers_below_t_when_the_link_is_cool() -> None:
    s = state(local_waiting=3 * 3)
    assert run(Adapter(CFG), s, 200) == pytest.approx(A.min_factor)
    hot = state(u=0.95, local_waiting=3 * 3)
    hot.pools[0].factor = 0.8
    assert run(Adapter(CFG), hot, 400) == 1.0  # both sides loaded: back to the plan


def test_relaxes_back_to_t_when_signals_clear() -> None:
    s = state(u=0.95)
    adapter = Adapter(CFG)
    run(adapter, s, 20)
    assert s.pools[0].factor > 1
    s.pools[0].link.egress_gbps = 10.0
    for now in range(20, 1000):
        adapter.observe(float(now), s)
    assert s.pools[0].factor == 1.0


@pytest.mark.parametrize("outage", ["pool", "link"])
def test_an_unusable_pool_holds_t_so_offload_resumes_at_once_when_it_is_back(outage: str) -> None:
    """While the pool (or its link) is down its queue is infinite and its link fully used: the
    old loop raised t_eff to its ceiling, and long prompts stayed local for many seconds after
    the pool was back. Now t_eff stays t while it is unusable."""
    s = state(u=0.2)
    ps = s.pools[0]
    adapter = Adapter(CFG)
    ps.factor = 1.5  # raised before the outage (a hot link)
    if outage == "pool":
        for k in range(4):
            ps.target.set_healthy(False, instance=k)
    else:
        ps.link.failed(retry_at=math.inf)
    run(adapter, s, 30)
    assert ps.factor == 1.0 and ps.threshold(20_000) == 20_000
    if outage == "pool":
        ps.target.set_healthy(True, instance=0)
    else:
        ps.link.set_healthy(True)
    adapter.observe(31.0, s)
    assert ps.factor == 1.0  # back: offload at t from the first observation


def test_static_and_disabled_configs_do_nothing() -> None:
    for cfg in (RoutingConfig.static(), RoutingConfig(adapt=AdaptationConfig(enabled=False))):
        s = state(u=0.95, pool_waiting=20)
        run(Adapter(cfg), s, 10)
        assert s.pools[0].factor == 1.0
    s = state(u=0.95)
    run(Adapter(RoutingConfig.static()), s, 3)
    assert s.pools[0].mode == Mode.ABUNDANT  # static never touches the mode


@pytest.mark.parametrize(
    "bad",
    [
        {"step_up": 1.0},
        {"min_factor": 1.5},
        {"interval_s": 0},
        {"relax_utilisation": 0.95},
    ],
)
def test_config_is_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AdaptationConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ModeThresholds(scarce_utilisation=0.3, abundant_utilisation=0.5)


def test_unhealthy_link_has_infinite_utilisation_and_backlog() -> None:
    link = LinkState("l", 10.0)
    link.set_healthy(False)
    link.sent(1.0)
    assert math.isinf(link.utilisation()) and math.isinf(link.backlog_seconds())


def policy(version: int, t: int = 20_000, budget: float = 100.0) -> RoutingPolicy:
    return RoutingPolicy(version, t, (PoolRoute("pool", (), budget),))


def test_router_meters_egress_and_adapts() -> None:
    router = Router(policy(1), 3, {"pool": 4})
    router.observe(0.0)
    router.meter(0, 95e9 / 8 * 30)  # 95 Gbps for 30 s
    router.observe(30.0)
    link = router.live.pools[0].link
    assert link.egress_gbps == pytest.approx(95.0 * (1 - math.exp(-3)), rel=1e-6)
    assert router.live.pools[0].factor > 1


def test_router_keeps_pool_state_by_name_and_resets_factor_on_new_version() -> None:
    router = Router(policy(1), 3, {"pool": 4})
    ps = router.live.pools[0]
    ps.factor = 2.0
    ps.target.set_waiting(5)
    router.set_policy(policy(1, budget=50.0))  # same version: factor kept, budget updated
    assert router.live.pools[0] is ps and ps.factor == 2.0 and ps.link.budget_gbps == 50.0
    router.set_policy(policy(2, t=25_000))
    assert router.live.pools[0] is ps and ps.factor == 1.0 and ps.target.waiting == 5
    router.set_policy(RoutingPolicy(3, None, ()))
    assert router.live.pools == []


def test_a_version_that_only_changes_the_engines_keeps_the_adaptation() -> None:
    """The operator publishes a pool's engines as they come and go: not a new plan, so the
    short-timescale correction stands."""
    router = Router(policy(1), 3, {"pool": 4})
    router.live.pools[0].factor = 2.0
    grown = RoutingPolicy(2, 20_000, (PoolRoute("pool", ("http://p0", "http://p1"), 100.0),))
    router.follow(grown)
    assert router.live.pools[0].factor == 2.0 and router.policy.version == 2
    router.set_policy(policy(3, budget=50.0))  # a new budget is a new plan
    assert router.live.pools[0].factor == 1.0


def test_router_tracks_instance_load() -> None:
    router = Router(policy(1), 2, {"pool": 2})
    d = router.route(50_000)
    router.dispatched(d)
    assert router.live.pools[0].target.instances[d.instance].load == 50_000
    router.prefilled(d)
    assert router.live.pools[0].target.instances[d.instance].load == 0


def test_without_cache_transfers_the_mode_stays_scarce() -> None:
    """The HTTP router cannot move cached prefixes between clusters: never abundant, even on
    an idle link, where the simulator's default would switch."""
    from prfaas.routing.config import ModeThresholds, RoutingConfig
    from prfaas.routing.policy import PoolRoute, RoutingPolicy
    from prfaas.routing.router import Router
    from prfaas.routing.state import Mode

    policy = RoutingPolicy(1, 19_400, (PoolRoute("pool", (), 100.0),))
    for transfers, expect in ((True, Mode.ABUNDANT), (False, Mode.SCARCE)):
        cfg = RoutingConfig(mode=ModeThresholds(cache_transfers=transfers, initial_abundant=False))
        router = Router(policy, 2, {"pool": 2}, cfg)
        for now in range(1, 30):
            router.observe(float(now))
        assert router.live.pools[0].mode == expect
