"""The operator's fleet view (pure): components, the memoised joint plan, a member's pass and
the shared pool's pass (one writer, within the safety rules)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from prfaas.api.common import Handoff
from prfaas.api.pdcluster import PDClusterSpec, PDClusterStatus
from prfaas.api.prefillpool import PrefillPoolSpec, PrefillPoolStatus
from prfaas.slowloop import fleet as fleet_mod
from prfaas.slowloop.fleet import (
    ClusterInput,
    Namespace,
    PoolInput,
    component,
    plan_component,
    with_workload,
)
from prfaas.slowloop.fleet_member import MemberDecision, PoolReach, decide_member
from prfaas.slowloop.fleet_pool import decide_pool
from prfaas.slowloop.observation import (
    DECODE,
    PREFILL,
    GroupObservation,
    Observation,
    Signals,
    SignalsUnavailable,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _doc(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "manifests/samples" / name).read_text())
    return doc


def cluster_spec(
    rate: float, pools: tuple[str, ...] = ("h200-pool",), **policy: Any
) -> PDClusterSpec:
    spec = copy.deepcopy(_doc("pdcluster-h20.yaml")["spec"])
    spec["workload"]["declared"]["arrivalRateRps"] = rate
    spec["policy"].update({"planPoolSize": True, "cooldownSeconds": 0, **policy})
    link = spec["prefillPools"][0]["link"]
    spec["prefillPools"] = [{"name": p, "link": link} for p in pools]
    return PDClusterSpec.model_validate(spec)


def pool_spec(lo: int = 1, hi: int = 8) -> PrefillPoolSpec:
    spec = copy.deepcopy(_doc("prefillpool-h200.yaml")["spec"])
    spec["replicas"] = {"min": lo, "max": hi}
    return PrefillPoolSpec.model_validate(spec)


def namespace(rate_a: float = 1.2, rate_b: float = 0.8, replicas: int = 4) -> Namespace:
    a, b = cluster_spec(rate_a), cluster_spec(rate_b)
    return Namespace(
        pools={"h200-pool": PoolInput(pool_spec(), replicas)},
        clusters={
            "a": ClusterInput(a, a.workload.declared),
            "b": ClusterInput(b, b.workload.declared),
        },
    )


def test_one_cluster_and_one_pool_is_not_a_fleet_two_sharing_a_pool_are() -> None:
    ns = namespace()
    comp = component(ns, cluster="a")
    assert comp.clusters == ("a", "b") and comp.pools == ("h200-pool",) and comp.is_fleet
    assert component(ns, pool="h200-pool") == comp
    alone = Namespace(ns.pools, {"a": ns.clusters["a"]})
    assert not component(alone, cluster="a").is_fleet
    two_pools = cluster_spec(1.0, ("p1", "p2"))
    assert component(Namespace({}, {"x": ClusterInput(two_pools, None)}), cluster="x").is_fleet


def test_shares_of_a_shared_pool_sum_to_its_busy_instances_and_follow_demand() -> None:
    ns = namespace()
    out = plan_component(ns, component(ns, cluster="a"))
    assert out.plan is not None and out.error is None
    pool = out.pool("h200-pool")
    assert pool is not None and 1 <= pool.n_prfaas <= 8
    shares = [s for c in out.plan.clusters for s in c.shares]
    assert sum(s.instances for s in shares) == pytest.approx(pool.busy_instances)
    assert pool.busy_instances <= pool.n_prfaas + 1e-6
    a, b = out.cluster("a"), out.cluster("b")
    assert a is not None and b is not None
    assert a.shares[0].rate_rps > b.shares[0].rate_rps  # a has more demand
    # b's traffic triples: its share of the pool grows, a's shrinks or stays
    more = namespace(rate_b=2.4)
    out2 = plan_component(more, component(more, cluster="a"))
    b2 = out2.cluster("b")
    assert b2 is not None and b2.shares[0].instances > b.shares[0].instances


def test_the_plan_is_memoised_on_its_inputs() -> None:
    ns = namespace(rate_a=1.3)
    comp = component(ns, cluster="a")
    first = plan_component(ns, comp).plan
    hits, misses = fleet_mod._plan.hits, fleet_mod._plan.misses
    again = plan_component(namespace(rate_a=1.3), comp).plan
    assert again is first and fleet_mod._plan.hits == hits + 1
    other = plan_component(namespace(rate_a=1.4), comp).plan
    assert other is not first and fleet_mod._plan.misses == misses + 1


def test_a_degraded_pool_or_a_cluster_without_demand_is_planned_without() -> None:
    ns = namespace()
    down = Namespace({"h200-pool": PoolInput(pool_spec(), 4, "member down")}, ns.clusters)
    out = plan_component(down, component(down, cluster="a"))
    assert out.plan is None and "degraded: member down" in out.without["h200-pool"]
    measured = cluster_spec(1.0).model_copy(deep=True)
    unknown = Namespace(ns.pools, {**ns.clusters, "b": ClusterInput(measured, None)})
    out = plan_component(unknown, component(unknown, cluster="a"))
    assert out.cluster("a") is not None and "b" in out.without


def _obs(name: str, spec: PDClusterSpec, signals: Signals | SignalsUnavailable) -> Observation:
    groups = {PREFILL: GroupObservation(5), DECODE: GroupObservation(3)}
    return Observation(name, spec, groups, signals, None, namespace="ns")


def test_a_member_scales_its_own_groups_and_routes_to_each_pool_it_has_a_share_of() -> None:
    ns = namespace()
    comp = component(ns, cluster="a")
    spec = cluster_spec(1.2, ("h200-pool", "spare"))
    ns = Namespace(
        {**ns.pools, "spare": PoolInput(pool_spec(), 2)},
        {**ns.clusters, "a": ClusterInput(spec, spec.workload.declared)},
    )
    comp = component(ns, cluster="a")
    out = plan_component(ns, comp)
    declared = spec.workload.declared
    assert declared is not None
    signals = Signals("Declared", declared, declared.arrival_rate_rps)
    reach = (
        PoolReach("h200-pool", ("http://p1",), 100.0, True, Handoff(protocol="sglang")),
        PoolReach("spare", ("http://s1",), 10.0),
    )
    d = decide_member(_obs("a", spec, signals), PDClusterStatus(), NOW, 1, out, reach)
    assert isinstance(d, MemberDecision)
    assert {c.group for c in d.changes} == {PREFILL, DECODE}  # never the pool
    row = out.cluster("a")
    assert row is not None
    result = d.outcome()
    status = result.status
    assert status.pool_shares is not None
    assert {s.pool for s in status.pool_shares} == {s.pool for s in row.shares}
    policy = status.routing_policy
    assert policy is not None and policy.threshold_tokens == row.threshold_tokens
    used = {s.pool for s in row.shares}
    for route in policy.prefill_pools:
        assert route.standby is (None if route.name in used else True)
    # each pool's P/D protocol and whether the operator found its engines, as reached
    routes = {r.name: r for r in policy.prefill_pools}
    assert routes["h200-pool"].discovered and routes["h200-pool"].handoff == Handoff(
        protocol="sglang"
    )
    assert routes["spare"].discovered is None and routes["spare"].handoff is None
    assert status.workload == declared


def test_a_member_with_stale_signals_holds() -> None:
    ns = namespace()
    out = plan_component(ns, component(ns, cluster="a"))
    stale = SignalsUnavailable("PrometheusUnreachable", "down")
    spec = cluster_spec(1.2)
    result = decide_member(_obs("a", spec, stale), PDClusterStatus(), NOW, 1, out, ())
    assert not isinstance(result, MemberDecision)
    assert result.status.phase == "Holding" and result.applied == []


def test_with_workload_replaces_only_a_measured_demand() -> None:
    ns = namespace()
    declared = ns.clusters["a"].workload
    assert declared is not None
    other = declared.model_copy(update={"arrival_rate_rps": 9.0})
    assert with_workload(ns, "a", other) is ns  # declared: the spec is what everyone reads


def test_the_pool_pass_moves_within_bounds_step_and_cooldown_and_reports_users() -> None:
    ns = namespace(replicas=2)
    out = plan_component(ns, component(ns, pool="h200-pool"))
    plan = out.pool("h200-pool")
    assert plan is not None and plan.n_prfaas > 3
    users = {n: c.spec for n, c in ns.clusters.items() if c.spec is not None}
    users = {n: s.model_copy(update={"policy": s.policy.model_copy(update={"max_step": 1})})
             for n, s in users.items()}  # fmt: skip
    d = decide_pool("h200-pool", pool_spec(), PrefillPoolStatus(), 1, GroupObservation(2), out,
                    users, NOW)  # fmt: skip
    assert d.to_apply is not None and d.to_apply.next == 3  # one step (maxStep 1)
    status = d.outcome(NOW)
    assert status.replicas == 3 and status.planned_by == "Fleet" and status.scaled_at
    assert status.users is not None and [u.pdcluster for u in status.users] == ["a", "b"]
    assert sum(u.instances for u in status.users) == pytest.approx(plan.busy_instances, abs=1e-3)
    # within the users' longest cooldown of that change: held
    slow = {n: s.model_copy(update={"policy": s.policy.model_copy(update={"cooldown_seconds": 60})})
            for n, s in users.items()}  # fmt: skip
    d2 = decide_pool("h200-pool", pool_spec(), status, 1, GroupObservation(3), out, slow,
                     NOW + timedelta(seconds=30))  # fmt: skip
    assert d2.to_apply is None and d2.change is not None and d2.change.reason == "cooldown"
    # bounds: never above the pool's max
    d3 = decide_pool("h200-pool", pool_spec(1, 2), PrefillPoolStatus(), 1, GroupObservation(2),
                     out, users, NOW)  # fmt: skip
    assert d3.to_apply is None and d3.change is not None and d3.change.desired == 2


def test_the_pool_pass_holds_for_observe_users_unknown_demand_and_unreachable_scale() -> None:
    ns = namespace(replicas=2)
    out = plan_component(ns, component(ns, pool="h200-pool"))
    users = {n: c.spec for n, c in ns.clusters.items() if c.spec is not None}
    observe = {**users, "b": users["b"].model_copy(
        update={"policy": users["b"].policy.model_copy(update={"mode": "Observe"})})}  # fmt: skip
    d = decide_pool("h200-pool", pool_spec(), PrefillPoolStatus(), 1, GroupObservation(2), out,
                    observe, NOW)  # fmt: skip
    assert d.change is not None and d.change.acts and d.to_apply is None
    dry = decide_pool("h200-pool", pool_spec(), PrefillPoolStatus(), 1, GroupObservation(2),
                      out, users, NOW, dry_run=True)  # fmt: skip
    assert dry.change is not None and dry.change.acts and dry.to_apply is None
    d = decide_pool("h200-pool", pool_spec(), PrefillPoolStatus(), 1, GroupObservation(2), out,
                    users, NOW, unknown=["c"])  # fmt: skip
    assert d.to_apply is None
    planned = next(c for c in d.status.conditions if c.type == "Planned")
    assert planned.status == "False" and "c not known yet" in planned.message
    gone = GroupObservation(None, "member down", reachable=False)
    d = decide_pool("h200-pool", pool_spec(), PrefillPoolStatus(replicas=2), 1, gone, out,
                    users, NOW)  # fmt: skip
    assert d.to_apply is None and d.status.phase == "Degraded" and d.status.replicas == 2


def test_the_pool_pass_does_not_fight_another_writer() -> None:
    ns = namespace(replicas=4)
    out = plan_component(ns, component(ns, pool="h200-pool"))
    plan = out.pool("h200-pool")
    assert plan is not None and plan.n_prfaas > 3
    users = {n: c.spec for n, c in ns.clusters.items() if c.spec is not None}
    mine = PrefillPoolStatus(planned_by="Fleet", replicas=4)  # what this writer left
    # someone scaled it to 2 behind the operator's back: left alone, said so
    d = decide_pool("h200-pool", pool_spec(), mine, 1, GroupObservation(2), out, users, NOW)
    assert d.to_apply is None and d.change is not None and not d.change.acts
    assert d.status.contested_generation == 1
    contested = next(c for c in d.status.conditions if c.type == "ScaleContested")
    assert contested.status == "True" and [e.reason for e in d.events] == ["ScaleContested"]
    # still contested at the same generation, even though replicas no longer move
    later = d.outcome(NOW)
    d2 = decide_pool("h200-pool", pool_spec(), later, 1, GroupObservation(2), out, users, NOW)
    assert d2.to_apply is None and d2.events == []
    # the pool's spec changes (generation 2): the operator acts again
    d3 = decide_pool("h200-pool", pool_spec(), later, 2, GroupObservation(2), out, users, NOW)
    assert d3.to_apply is not None and d3.status.contested_generation is None


class _Listing:
    """A stand-in for the API server's list answer (the edge is tested on a real one in
    tests/integration/test_operator_fleet.py; this pins its parsing rules)."""

    def __init__(self, pools: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> None:
        self.items = {"prefillpools": pools, "pdclusters": clusters}

    def list_custom(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        return self.items[plural]

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return next((o for o in self.items[plural] if o["metadata"]["name"] == name), None)


def test_reading_a_namespace_uses_published_demand_and_skips_the_deleted() -> None:
    from prfaas.controller.fleet import read_namespace

    ready = {
        "type": "Ready",
        "status": "False",
        "reason": "Unreachable",
        "message": "dc-east: timed out",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    good = {
        "metadata": {"name": "h200-pool", "generation": 3},
        "spec": _doc("prefillpool-h200.yaml")["spec"],
        "status": {"replicas": 4, "phase": "Degraded", "conditions": [ready]},
    }
    bad = {"metadata": {"name": "broken"}, "spec": {"datacenter": ""}}
    measured = copy.deepcopy(_doc("pdcluster-h20.yaml")["spec"])
    measured["workload"] = {"prometheus": {"url": "http://127.0.0.1:9090"}}
    declared = cluster_spec(1.0).model_dump(by_alias=True, exclude_none=True, mode="json")
    published = declared["workload"]["declared"] | {"arrivalRateRps": 2.5}
    clusters = [
        {"metadata": {"name": "m"}, "spec": measured, "status": {"workload": published}},
        {"metadata": {"name": "new"}, "spec": measured},
        {
            "metadata": {"name": "gone", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": measured,
        },
    ]
    listing = read_namespace(_Listing([good, bad], clusters), "ns")  # type: ignore[arg-type]
    assert set(listing.ns.clusters) == {"m", "new"}  # a PDCluster being deleted frees its share
    m = listing.ns.clusters["m"].workload
    assert m is not None and m.arrival_rate_rps == 2.5
    assert listing.ns.clusters["new"].workload is None  # not measured yet
    assert listing.ns.pools["broken"].spec is None
    pool = listing.ns.pools["h200-pool"]
    assert pool.replicas == 4 and pool.degraded == "dc-east: timed out"
    assert listing.pool_generation["h200-pool"] == 3
    assert listing.lead(component(listing.ns, cluster="m")) == "m"


def test_the_lead_rereads_the_pools_it_sizes() -> None:
    """The index a pass plans from may lag its watch: the pass that sizes pools reads them
    again, so a pool deleted since is never sized and cooldowns come from the status now."""
    from prfaas.controller.fleet import Objects, listing_of, reread_pools

    spec = _doc("prefillpool-h200.yaml")["spec"]
    seen = [
        {"metadata": {"name": p, "generation": 1}, "spec": spec, "status": {"replicas": 2}}
        for p in ("kept", "gone")
    ]
    listing = listing_of(Objects(tuple(seen), ()))
    now = {"metadata": {"name": "kept", "generation": 2}, "spec": spec,
           "status": {"replicas": 3, "scaledAt": "2026-01-01T00:00:00Z"}}  # fmt: skip
    fresh = reread_pools(
        _Listing([now], []),  # type: ignore[arg-type]
        "ns",
        listing,
        ["kept", "gone"],
    )
    assert set(fresh.pool_specs) == {"kept"} and set(fresh.ns.pools) == {"kept"}
    assert fresh.pool_generation["kept"] == 2
    assert fresh.pool_status["kept"].scaled_at is not None
    assert set(listing.pool_specs) == {"kept", "gone"}  # the index's view is not changed
