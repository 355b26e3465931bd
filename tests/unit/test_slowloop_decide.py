"""The slow loop's decide step on plain data: no API server, no Prometheus, no fakes of I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from prfaas.api.common import Endpoints
from prfaas.api.pdcluster import EndpointDiscovery, PDClusterSpec, PDClusterStatus
from prfaas.api.prefillpool import PrefillPoolSpec
from prfaas.slowloop.conditions import condition
from prfaas.slowloop.decide import Decision, Outcome, decide, with_pool_engines
from prfaas.slowloop.observation import (
    DECODE,
    POOL,
    PREFILL,
    GroupName,
    GroupObservation,
    Observation,
    PoolObservation,
    Signals,
    SignalsUnavailable,
)

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _spec(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((SAMPLES / name).read_text())["spec"])


def observation(
    prefill: int | None = 3,
    decode: int | None = 5,
    pool: int | None = 4,
    *,
    mode: str = "Enforce",
    plan_pool: bool = False,
    pool_reachable: bool = True,
    signals: Signals | SignalsUnavailable | None = None,
) -> Observation:
    raw = _spec("pdcluster-h20.yaml")
    raw["policy"]["mode"] = mode
    raw["policy"]["planPoolSize"] = plan_pool
    spec = PDClusterSpec.model_validate(raw)
    pool_spec = PrefillPoolSpec.model_validate(_spec("prefillpool-h200.yaml"))
    assert spec.workload.declared is not None
    groups: dict[GroupName, GroupObservation] = {
        PREFILL: GroupObservation(prefill),
        DECODE: GroupObservation(decode),
        POOL: GroupObservation(pool)
        if pool_reachable
        else GroupObservation(None, "member dc-east: timed out", reachable=False),
    }
    return Observation(
        "h20-pd",
        spec,
        groups,
        signals or Signals("Declared", spec.workload.declared, 1.0),
        PoolObservation(spec.prefill_pools[0], pool_spec),
    )


def decided(obs: Observation, old: PDClusterStatus | None = None, **kw: Any) -> Decision:
    d = decide(obs, old or PDClusterStatus(), NOW, 1, **kw)
    assert isinstance(d, Decision)
    return d


def reason(out: Outcome, ctype: str) -> str | None:
    c = condition(out.status.conditions, ctype)
    return None if c is None else f"{c.status}/{c.reason}"


def test_at_plan_nothing_to_do_and_the_policy_is_published() -> None:
    d = decided(observation())
    assert d.to_apply == []
    out = d.outcome()
    s = out.status
    assert s.phase == "Applied" and s.plan is not None and s.routing_policy is not None
    assert (s.plan.n_prefill, s.plan.n_decode, s.plan.n_prfaas) == (3, 5, 4)
    assert s.routing_policy.version == 1 and s.routing_policy.threshold_tokens == 19_400
    assert reason(out, "PlanApplied") == "True/AtPlan"
    assert reason(out, "Ready") == "True/Planned"
    assert {e.reason for e in out.events} == {"Planned", "RoutingPolicy"}


def test_same_content_keeps_the_version_and_posts_no_event() -> None:
    first = decided(observation()).outcome()
    again = decided(observation(), first.status).outcome()
    assert again.status.routing_policy == first.status.routing_policy
    assert again.events == []


def test_enforce_steps_toward_the_plan_growth_first() -> None:
    d = decided(observation(prefill=6, decode=2))
    assert [(c.group, c.current, c.next) for c in d.to_apply] == [
        (DECODE, 2, 4),  # maxStep 2, growth first
        (PREFILL, 6, 4),
    ]
    out = d.outcome()
    assert [c.group for c in out.applied] == [DECODE, PREFILL]
    assert out.status.replicas is not None
    assert (out.status.replicas.prefill, out.status.replicas.decode) == (4, 4)
    assert (
        out.status.scaled_at is not None and out.status.scaled_at.decode == "2026-11-30T12:00:00Z"
    )
    assert reason(out, "PlanApplied") == "False/InProgress"
    assert [e.reason for e in out.events][:2] == ["Scaled", "Scaled"]


def test_the_pool_is_scaled_and_its_status_reported() -> None:
    d = decided(observation(pool=2, plan_pool=True))
    pool = next(c for c in d.to_apply if c.group == POOL)
    assert (pool.current, pool.next) == (2, 4)  # maxStep 2 toward a bigger pool
    out = d.outcome()
    s = out.status
    assert s.replicas is not None and s.replicas.prefill_pool == 4
    assert s.scaled_at is not None and s.scaled_at.prefill_pool == "2026-11-30T12:00:00Z"
    assert out.pool_name == "h200-pool" and out.pool_status is not None
    assert out.pool_status.replicas == 4 and out.pool_status.desired_replicas == pool.desired
    again = decided(observation(pool=4, plan_pool=True), s)  # within the cooldown
    assert again.to_apply == [] and again.outcome().status.scaled_at == s.scaled_at


def test_a_failed_write_is_reported_and_routing_follows_what_runs() -> None:
    d = decided(observation(prefill=6, decode=2))
    out = d.outcome({DECODE: "HTTP 409 Conflict"})
    assert [c.group for c in out.applied] == [PREFILL]
    assert out.status.phase == "Degraded"
    assert reason(out, "Degraded") == "True/ScaleFailed"
    assert out.status.replicas is not None and out.status.replicas.decode == 2
    assert out.status.scaled_at is not None and out.status.scaled_at.decode is None


def test_cooldown_from_the_previous_status_holds_a_group() -> None:
    first = decided(observation(prefill=6, decode=2)).outcome()
    d = decide(observation(prefill=4, decode=4), first.status, NOW + timedelta(seconds=60), 1)
    assert isinstance(d, Decision) and d.to_apply == []
    assert {c.reason for c in d.changes if c.next != c.desired} == {"cooldown"}


def test_observe_mode_and_dry_run_never_scale() -> None:
    out = decided(observation(prefill=6, decode=2, mode="Observe")).outcome()
    assert out.applied == [] and reason(out, "PlanApplied") == "False/Observe"
    d = decided(observation(prefill=6, decode=2), dry_run=True)
    assert d.to_apply == [] and reason(d.outcome(), "PlanApplied") == "False/DryRun"


def test_stale_signals_hold_the_last_good_plan() -> None:
    good = decided(observation()).outcome().status
    stale = SignalsUnavailable("TooFewSamples", "12 requests in 5m")
    out = decide(observation(prefill=6, decode=2, signals=stale), good, NOW, 1)
    assert isinstance(out, Outcome)  # nothing to act on
    assert out.status.phase == "Holding"
    assert out.status.plan == good.plan and out.status.routing_policy == good.routing_policy
    assert reason(out, "SignalsStale") == "True/TooFewSamples"
    assert [e.reason for e in out.events] == ["SignalsStale"]
    again = decide(observation(signals=stale), out.status, NOW, 1)
    assert isinstance(again, Outcome) and again.events == []  # one warning, not one per pass


def test_an_unreachable_pool_stops_all_shrinking() -> None:
    d = decided(observation(prefill=6, decode=2, pool_reachable=False))
    by_group = {c.group: c for c in d.changes}
    assert by_group[PREFILL].reason == "a member cluster is unreachable: no shrinking"
    assert d.to_apply == []  # decode may only grow onto machines prefill frees
    out = d.outcome()
    assert reason(out, "Degraded") == "True/Unreachable"
    assert out.pool_status is not None and out.pool_status.phase == "Degraded"


def test_an_unreachable_member_keeps_the_pool_in_the_policy_as_last_seen() -> None:
    """The member's API server does not answer: its engines may still serve (the routers check
    them). The policy keeps the pool at its last seen size, same content, same version, pass
    after pass; the Degraded condition says so."""
    first = decided(observation()).outcome().status
    policy = first.routing_policy
    assert policy is not None and policy.prefill_pools
    status = first
    for k in range(3):
        d = decide(observation(pool_reachable=False), status, NOW + timedelta(seconds=60 * k), 1)
        assert isinstance(d, Decision)
        out = d.outcome()
        status = out.status
        assert status.routing_policy == policy  # nothing changed: no new version
        assert "RoutingPolicy" not in {e.reason for e in out.events}
        assert status.replicas is not None and status.replicas.prefill_pool == 4
        degraded = condition(status.conditions, "Degraded")
        assert degraded is not None and degraded.reason == "Unreachable"
        assert "keeps the pool as last seen (4 instances)" in degraded.message
    # back: same counts, same policy
    back = decided(observation(), status).outcome().status
    assert back.routing_policy == policy


def test_a_member_never_seen_is_not_offloaded_to_and_the_condition_says_why() -> None:
    out = decided(observation(pool_reachable=False)).outcome()
    policy = out.status.routing_policy
    assert policy is not None and policy.prefill_pools == [] and policy.threshold_tokens is None
    degraded = condition(out.status.conditions, "Degraded")
    assert degraded is not None and "not offloading to it until its size" in degraded.message
    again = decide(observation(pool_reachable=False), out.status, NOW, 1)
    assert isinstance(again, Decision) and again.outcome().status.routing_policy == policy


@pytest.mark.parametrize("measured", [None, 10.0])
def test_a_measured_link_capacity_is_planned_for(measured: float | None) -> None:
    obs = observation()
    obs = Observation(obs.name, obs.spec, obs.groups, obs.signals, obs.pool, measured)
    out = decided(obs).outcome()
    policy = out.status.routing_policy
    assert policy is not None and policy.prefill_pools
    assert policy.prefill_pools[0].link_budget_gbps == (measured or 100.0)
    assert out.status.plan is not None
    if measured:  # a tenth of the link: less offloaded, so a higher threshold
        assert out.status.plan.threshold_tokens is not None
        assert out.status.plan.threshold_tokens > 19_400


def test_pods_the_scheduler_cannot_place_are_reported_not_hidden() -> None:
    obs = observation(pool=5)
    pending = ("h200-prefill-7f9-x2: 0/2 nodes are available: 1 Insufficient nvidia.com/gpu",)
    groups = {**obs.groups, POOL: GroupObservation(5, unschedulable=pending)}
    out = decided(Observation(obs.name, obs.spec, groups, obs.signals, obs.pool)).outcome()
    assert reason(out, "Degraded") == "True/Unschedulable" and out.status.phase == "Degraded"
    c = condition(out.status.conditions, "Degraded")
    assert c is not None and "prefillPool: 1 pod(s) Pending" in c.message
    assert "Insufficient nvidia.com/gpu" in c.message
    # a report only: the plan is still made and published
    assert reason(out, "Ready") == "True/Planned" and out.status.routing_policy is not None
    again = decided(observation(pool=5), out.status).outcome()  # scheduled: the report clears
    assert reason(again, "Degraded") == "False/AllReachable"


def test_a_plan_over_the_budget_is_refused_before_planning() -> None:
    obs = observation(plan_pool=True)
    spec = obs.spec.model_copy(
        update={
            "policy": obs.spec.policy.model_copy(
                update={
                    "threshold": obs.spec.policy.threshold.model_copy(update={"step_tokens": 1})
                }
            )
        }
    )
    big = Observation(obs.name, spec, obs.groups, obs.signals, obs.pool)

    def never(_: object) -> Any:
        raise AssertionError("planned anyway")

    out = decide(big, PDClusterStatus(), NOW, 1, planner=never, max_plan_cells=2_000_000)
    assert isinstance(out, Outcome)
    assert reason(out, "Ready") == "False/PlanTooLarge"
    c = condition(out.status.conditions, "Ready")
    assert c is not None and "7,340,088 cells" in c.message  # 8 pool sizes × 7 splits × 131,073


def test_grid_cells_counts_the_planners_search() -> None:
    from prfaas.model.planner import grid_cells, plan
    from prfaas.model.scenario import Range, case_study

    sc = case_study()
    sc = sc.model_copy(
        update={"planner": sc.planner.model_copy(update={"pool_instances": Range(min=2, max=5)})}
    )
    assert plan(sc).surface.throughput.size == grid_cells(sc)


def test_a_group_another_writer_changed_is_left_alone_until_the_spec_changes() -> None:
    first = decided(observation(prefill=6, decode=2)).outcome()  # writes decode 2 → 4
    assert first.status.replicas is not None and first.status.replicas.decode == 4
    later = NOW + timedelta(minutes=10)  # past the cooldown
    # an HPA (or a GitOps tool) puts decode back to 2
    d = decide(observation(prefill=4, decode=2), first.status, later, 1)
    assert isinstance(d, Decision)
    assert all(c.group != DECODE for c in d.to_apply)
    decode = next(c for c in d.changes if c.group == DECODE)
    assert decode.reason == "another writer owns its replicas"
    out = d.outcome()
    assert reason(out, "ScaleContested") == "True/AnotherWriter"
    assert out.status.contested is not None and out.status.contested.groups == [DECODE]
    assert [e.reason for e in out.events].count("ScaleContested") == 1
    # the next passes, same generation: still held, no new warning
    assert out.status.replicas is not None and out.status.replicas.prefill is not None
    n_p = out.status.replicas.prefill  # what the operator left prefill at
    again = decide(observation(prefill=n_p, decode=2), out.status, later + timedelta(minutes=1), 1)
    assert isinstance(again, Decision) and all(c.group != DECODE for c in again.to_apply)
    assert "ScaleContested" not in [e.reason for e in again.outcome().events]
    # the spec changes (generation 2): the operator acts again
    resumed = decide(
        observation(prefill=n_p, decode=2), out.status, later + timedelta(minutes=9), 2
    )
    assert isinstance(resumed, Decision)
    assert any(c.group == DECODE for c in resumed.to_apply)
    assert reason(resumed.outcome(), "ScaleContested") == "False/SoleWriter"


# -- engines found from EndpointSlices -----------------------------------------------------------


def discovering(
    endpoints: tuple[str, ...] | None, signals: Signals | SignalsUnavailable | None = None
) -> Observation:
    """The case study with every group named by Service; the pool's engines as listed now."""
    obs = observation(signals=signals)
    stage = obs.spec.prefill.model_copy(
        update={"endpoints": Endpoints(service="h20-prefill", port="http")}
    )
    decode_ref = obs.spec.decode.scale_target_ref.model_copy(update={"namespace": "engines"})
    decode = obs.spec.decode.model_copy(
        update={"endpoints": Endpoints(selector={"tier": "decode"}), "scale_target_ref": decode_ref}
    )
    spec = obs.spec.model_copy(update={"prefill": stage, "decode": decode})
    assert obs.pool is not None and obs.pool.spec is not None
    pool_spec = obs.pool.spec.model_copy(update={"endpoints": Endpoints(service="h200-prefill")})
    pool = PoolObservation(obs.pool.link, pool_spec, endpoints=endpoints)
    return replace(obs, spec=spec, pool=pool, namespace="pd")


def test_local_groups_by_service_are_left_to_the_router() -> None:
    policy = decided(discovering(("http://10.1.0.1:8000",))).outcome().status.routing_policy
    assert policy is not None
    assert policy.prefill_endpoints == [] and policy.decode_endpoints == []
    assert policy.prefill_discovery == EndpointDiscovery(
        namespace="pd", label_selector="kubernetes.io/service-name=h20-prefill", port="http"
    )
    assert policy.decode_discovery == EndpointDiscovery(
        namespace="engines", label_selector="tier=decode"
    )
    assert policy.prefill_pools[0].endpoints == ["http://10.1.0.1:8000"]


def test_the_pool_s_engines_are_versioned_and_held_when_unknown() -> None:
    first = decided(discovering(("http://10.1.0.1:8000",))).outcome().status
    grown = decided(discovering(("http://10.1.0.1:8000", "http://10.1.0.2:8000")), first)
    second = grown.outcome().status
    assert first.routing_policy is not None and second.routing_policy is not None
    assert second.routing_policy.version == first.routing_policy.version + 1
    assert second.routing_policy.threshold_tokens == first.routing_policy.threshold_tokens
    # the pool's cluster did not answer: what was published holds, no new version
    held = decided(discovering(None), second).outcome().status.routing_policy
    assert held == second.routing_policy
    # none ready is news too
    empty = decided(discovering(()), second).outcome().status.routing_policy
    assert empty is not None and empty.prefill_pools[0].endpoints == []


def test_while_signals_are_stale_the_pool_s_engines_still_follow() -> None:
    first = decided(discovering(("http://10.1.0.1:8000",))).outcome().status
    stale = SignalsUnavailable("PrometheusUnreachable", "connection refused")
    out = decide(discovering(("http://10.1.0.2:8000",), stale), first, NOW, 1)
    assert isinstance(out, Outcome) and out.status.phase == "Holding"
    policy = out.status.routing_policy
    assert first.routing_policy is not None and policy is not None
    assert policy.prefill_pools[0].endpoints == ["http://10.1.0.2:8000"]
    assert policy.version == first.routing_policy.version + 1
    assert policy.threshold_tokens == first.routing_policy.threshold_tokens  # the plan holds
    assert out.status.plan == first.plan
    assert "RoutingPolicy" in {e.reason for e in out.events}


def test_with_pool_engines_changes_only_that_pool() -> None:
    status = decided(discovering(("http://a",))).outcome().status
    policy = status.routing_policy
    assert policy is not None
    assert with_pool_engines(policy, "h200-pool", ["http://a"]) == policy
    assert with_pool_engines(policy, "other", ["http://b"]) == policy
    moved = with_pool_engines(policy, "h200-pool", ["http://b"])
    assert moved.version == policy.version + 1 and moved.prefill_pools[0].endpoints == ["http://b"]


def test_a_namespace_the_cr_may_not_name_gets_no_discovery() -> None:
    """Like its scale target: a group whose target namespace the operator refuses is not
    handed to the router to list either."""
    obs = discovering(("http://a",))
    refused = GroupObservation(None, "outside the namespace", reason="TargetForbidden")
    out = decide(replace(obs, groups={**obs.groups, DECODE: refused}), PDClusterStatus(), NOW, 1)
    policy = (
        out.status.routing_policy
        if isinstance(out, Outcome)
        else out.outcome().status.routing_policy
    )
    assert policy is not None and policy.decode_discovery is None
    assert policy.prefill_discovery is not None


def test_each_groups_pd_protocol_is_published_for_the_router() -> None:
    """Default vLLM: absent (policies of clusters that declare none stay as they were); SGLang
    on the pool and the local group: published, and the router reads it back."""
    from prfaas.api.common import Handoff
    from prfaas.routing.policy import RoutingPolicy

    plain = decided(observation()).outcome().status.routing_policy
    assert plain is not None and plain.prefill_handoff is None
    assert plain.prefill_pools[0].handoff is None
    obs = observation()
    assert obs.pool is not None and obs.pool.spec is not None
    sglang = Handoff(protocol="sglang", bootstrap_port=9001)
    prefill = obs.spec.prefill.model_copy(update={"handoff": sglang})
    pool = obs.pool.spec.model_copy(update={"handoff": Handoff(protocol="sglang")})
    obs = replace(
        obs,
        spec=obs.spec.model_copy(update={"prefill": prefill}),
        pool=replace(obs.pool, spec=pool),
    )
    policy = decided(obs).outcome().status.routing_policy
    assert policy is not None
    read = RoutingPolicy.from_status(policy.model_dump(mode="json", by_alias=True))
    assert (read.prefill_handoff.protocol, read.prefill_handoff.bootstrap_port) == ("sglang", 9001)
    assert read.pools[0].handoff.sglang and read.pools[0].handoff.bootstrap_port == 8998
