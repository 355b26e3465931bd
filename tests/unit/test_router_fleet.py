"""The HTTP router's fleet: the routing core follows the policy's endpoints (and those found
from EndpointSlices), scraped health and queues reach it, failed links stay down until a probe
says otherwise, decode choice counts the router's own requests from the pick, waits on a hung
engine end, requests in flight are counted by endpoint and cannot leak, and an engine that leaves
drains: nothing new is sent there."""

from __future__ import annotations

import pytest

from prfaas.router.fleet import Engine, Fleet
from prfaas.routing import PoolRoute, RoutingPolicy
from prfaas.routing.policy import EndpointSource


def policy(version: int = 1, local: tuple[str, ...] = ("http://l0", "http://l1")) -> RoutingPolicy:
    pool = PoolRoute("pool", ("http://p0", "http://p1", "not a url"), 100.0)
    return RoutingPolicy(version, 19_400, (pool,), local, ("http://d0",))


def test_the_core_follows_the_endpoints_and_scraped_health() -> None:
    fleet = Fleet(link_retry_s=5.0)
    assert fleet.apply(policy()) == [("not a url", "invalid")]
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
    # none healthy, both only missed scrapes (slow, not gone): the least loaded, as a last resort
    assert fleet.has_decode() and fleet.pick_decode() is not None
    fleet.engine_failed("http://d0")  # a request there failed: gone for the last resort too
    assert fleet.pick_decode().url == "http://d1"  # type: ignore[union-attr]
    fleet.engines["http://d1"].refused = True
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


SOURCE = EndpointSource("pd", "kubernetes.io/service-name=h20-prefill", "http")
DECODE = EndpointSource("pd", "kubernetes.io/service-name=h20-decode", "http")


def found_policy(version: int = 1) -> RoutingPolicy:
    pool = PoolRoute("pool", ("http://p0",), 100.0)
    return RoutingPolicy(version, 19_400, (pool,), (), (), SOURCE, DECODE)


def test_engines_found_join_the_policy_and_leave_it() -> None:
    fleet = Fleet()
    fleet.apply(found_policy())
    assert fleet.policy is not None and fleet.policy.prefill_endpoints == ()
    fleet.set_found(SOURCE, ["http://10.0.0.1:8000", "http://10.0.0.2:8000"])
    fleet.set_found(DECODE, ["http://10.0.1.1:8000"])
    assert fleet.policy.prefill_endpoints == ("http://10.0.0.1:8000", "http://10.0.0.2:8000")
    assert [i.name for i in fleet.core.live.local.instances] == list(fleet.policy.prefill_endpoints)
    assert [e.url for e in fleet.decode] == ["http://10.0.1.1:8000"]
    # a new version of the same sources keeps what was found; a source it drops is forgotten
    fleet.apply(found_policy(2))
    assert len(fleet.policy.prefill_endpoints) == 2
    fleet.apply(RoutingPolicy(3, None, (), (), ("http://static:8000",)))
    assert fleet.found == {} and fleet.policy.decode_endpoints == ("http://static:8000",)
    # news from a source the policy does not name is ignored
    assert fleet.set_found(SOURCE, ["http://10.0.0.9:8000"]) == []
    assert fleet.policy.prefill_endpoints == ()


def test_an_engine_that_leaves_with_requests_in_flight_drains() -> None:
    fleet = Fleet()
    fleet.apply(found_policy())
    fleet.set_found(SOURCE, ["http://a", "http://b"])
    fleet.set_found(DECODE, ["http://d1", "http://d2"])
    d = fleet.core.route(1_000)
    url = fleet.prefill_url(d)
    decode = fleet.pick_decode()
    assert decode is not None
    with fleet.in_flight(d), decode:
        assert fleet.engines[url].active == 1
        fleet.set_found(SOURCE, [u for u in ("http://a", "http://b") if u != url])
        fleet.set_found(DECODE, [u for u in ("http://d1", "http://d2") if u != decode.url])
        assert url not in fleet.engines and not fleet.routes_to(decode)
        states = fleet.endpoint_states()
        assert states[url] == {"draining": True, "inFlight": 1}
        assert states[decode.url] == {"draining": True, "inFlight": 1}
        # no new work goes there
        for _ in range(20):
            assert fleet.prefill_url(fleet.core.route(1_000)) != url
            assert fleet.pick_decode() is not decode
    fleet.sync_health()
    assert fleet.draining == {} and url not in fleet.endpoint_states()


def test_an_engine_that_comes_back_keeps_its_count_in_flight() -> None:
    fleet = Fleet()
    fleet.apply(found_policy())
    fleet.set_found(SOURCE, ["http://a"])
    d = fleet.core.route(1_000)
    with fleet.in_flight(d):
        fleet.set_found(SOURCE, [])
        fleet.set_found(SOURCE, ["http://a"])
        assert fleet.engines["http://a"].active == 1 and fleet.draining == {}
    assert fleet.engines["http://a"].active == 0


def test_an_exception_releases_the_prefill_in_flight() -> None:
    fleet = Fleet()
    fleet.apply(policy())
    d = fleet.core.route(1_000)
    url = fleet.prefill_url(d)
    with pytest.raises(RuntimeError), fleet.in_flight(d, (), 1_000):
        assert fleet.core.live.local.instances[d.instance].load == 1_000
        raise RuntimeError
    assert fleet.engines[url].active == 0
    assert fleet.core.live.local.instances[d.instance].load == 0


def test_localhost_names_resolve_only_when_asked() -> None:
    named = RoutingPolicy(
        1, None, (), ("http://prefill-0.localhost:8001",), ("http://d.localhost",)
    )
    fleet = Fleet(resolve_localhost=True)
    fleet.apply(named)
    assert fleet.policy is not None
    assert fleet.policy.prefill_endpoints == ("http://127.0.0.1:8001",)
    assert fleet.policy.decode_endpoints == ("http://127.0.0.1",)
    plain = Fleet()
    plain.apply(named)
    assert plain.policy is not None and plain.policy.prefill_endpoints == named.prefill_endpoints


def test_the_metrics_follow_the_engines_that_come_and_go() -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from prfaas.router import telemetry
    from prfaas.router.metrics import RouterMetrics

    def parse_metrics(m: RouterMetrics) -> dict[str, float]:
        text = generate_latest(m.registry).decode()
        return {
            f"{s.name}{{" + ",".join(f'{k}="{v}"' for k, v in s.labels.items()) + "}": s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }

    fleet, metrics = Fleet(), RouterMetrics()
    fleet.apply(found_policy())
    fleet.set_found(SOURCE, ["http://a", "http://b"])
    telemetry.export(fleet, metrics)
    d = fleet.core.route(1_000)
    url = fleet.prefill_url(d)
    with fleet.in_flight(d):
        fleet.set_found(SOURCE, [u for u in ("http://a", "http://b") if u != url])
        telemetry.export(fleet, metrics)
        seen = parse_metrics(metrics)
        assert seen[f'prfaas_router_engine_draining{{endpoint="{url}"}}'] == 1
        assert seen[f'prfaas_router_engine_in_flight{{endpoint="{url}"}}'] == 1
        assert f'prfaas_router_engine_up{{endpoint="{url}"}}' not in seen
    fleet.sync_health()
    telemetry.export(fleet, metrics)
    assert not [k for k in parse_metrics(metrics) if url in k]  # gone: no stale series


def test_a_pool_that_left_the_policy_leaves_no_gauges() -> None:
    """A PrefillPool deleted (or dropped by the plan) must not stay on ``/metrics`` as a phantom
    link with its last utilisation, state and threshold; with no threshold the gauge says -1."""
    from prometheus_client import generate_latest

    from prfaas.router import telemetry
    from prfaas.router.metrics import RouterMetrics

    def pool_series(m: RouterMetrics) -> dict[str, str]:
        lines = generate_latest(m.registry).decode().splitlines()
        return {ln.split("{")[0]: ln.rsplit(" ", 1)[1] for ln in lines if 'pool="b"' in ln}

    two = (PoolRoute("a", ("http://a",), 10.0), PoolRoute("b", ("http://b",), 10.0))
    fleet, metrics = Fleet(), RouterMetrics()
    fleet.apply(RoutingPolicy(1, 20_000, two, ("http://l",), ("http://d",)))
    telemetry.export(fleet, metrics)
    before = pool_series(metrics)
    assert before["prfaas_router_link_up"] == "1.0" and before["prfaas_router_link_in_flight_bytes"]
    assert before["prfaas_router_threshold_tokens"] == "20000.0"
    fleet.apply(RoutingPolicy(2, None, two[:1], ("http://l",), ("http://d",)))
    telemetry.export(fleet, metrics)
    assert pool_series(metrics) == {}  # only counters would stay; pool b had no traffic
    text = generate_latest(metrics.registry).decode()
    assert 'prfaas_router_threshold_tokens{pool="a"} -1.0' in text


def test_the_workers_view_drops_gauges_of_departed_engines_and_pools_only() -> None:
    """Under ``--workers`` the merged files keep every series ever written: the view filters the
    gauges by what the fleet has now; counters (history) and unlabelled series pass."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

    from prfaas.router.metrics import _View

    inner = CollectorRegistry()
    link_up = Gauge("link_up", "", ["pool"], registry=inner)
    engine_up = Gauge("engine_up", "", ["endpoint"], registry=inner)
    sent = Counter("link_bytes", "", ["pool"], registry=inner)
    Gauge("version", "", registry=inner).set(3)
    for name in ("a", "b"):
        link_up.labels(name).set(1)
        sent.labels(name).inc(5)
    for url in ("http://x", "http://y"):
        engine_up.labels(url).set(1)
    view = CollectorRegistry()
    view.register(_View(inner, {"pdcluster": "ns/c"}, lambda: {"endpoint": {"http://x"},
                                                                "pool": {"a"}}))  # fmt: skip
    text = generate_latest(view).decode()
    assert 'link_up{pdcluster="ns/c",pool="a"} 1.0' in text
    assert 'link_up{pdcluster="ns/c",pool="b"}' not in text
    assert 'link_bytes_total{pdcluster="ns/c",pool="b"} 5.0' in text
    assert "http://x" in text and "http://y" not in text
    assert 'version{pdcluster="ns/c"} 3.0' in text
