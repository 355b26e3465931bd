"""The operator's slow loop in simulated time: ``prfaas.slowloop.decide`` on what the simulator
measures, so the safety rules, the deadband and the policy versioning are the operator's own.

The scenario becomes the custom resources an operator would reconcile: a PDCluster in
``Enforce`` mode with ``maxStep`` 1 and the simulator's cooldown (roles convert one instance at a
time), and a PrefillPool held at its size. Each pass observes the role split serving now, the
link capacity once it has settled, and the arrival rate over the last five minutes (the
operator's default Prometheus window).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prfaas.api.common import ReplicaBounds, ScaleTargetRef
from prfaas.api.pdcluster import (
    PDClusterSpec,
    PDClusterStatus,
    Policy,
    PoolLink,
    PrefillStage,
    Stage,
    ThresholdPolicy,
    WorkloadSource,
)
from prfaas.api.prefillpool import PrefillPoolSpec
from prfaas.model.planner import PlanResult, plan
from prfaas.model.scenario import Scenario
from prfaas.routing.policy import RoutingPolicy
from prfaas.slowloop.decide import Decision, decide
from prfaas.slowloop.observation import (
    DECODE,
    POOL,
    PREFILL,
    GroupObservation,
    Observation,
    PoolObservation,
    Signals,
)

POOL_NAME = "prefill-pool"  # the pool's name in the CRs and in the simulated router
RATE_WINDOW_S = 300.0
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # simulated second 0


@dataclass(frozen=True)
class Step:
    """What one pass asks of the simulator: ``+1`` converts a PD-D instance to PD-P, ``-1`` a
    PD-P instance to PD-D, ``0`` nothing; and the policy to route by, when it changed."""

    convert: int
    policy: RoutingPolicy | None


def resources(
    scenario: Scenario, n_prefill: int, n_decode: int, n_pool: int, cooldown_s: float
) -> tuple[PDClusterSpec, PrefillPoolSpec]:
    """The scenario as a PDCluster and its PrefillPool, at the given instance counts."""
    pd, n = scenario.pd_cluster, n_prefill + n_decode
    min_p, min_d = min(pd.min_prefill, n_prefill), min(pd.min_decode, n_decode)

    def stage(name: str, lo: int, hi: int) -> Stage:
        ref = ScaleTargetRef(api_version="sim/v1", kind="Simulated", name=name)
        return Stage(scale_target_ref=ref, replicas=ReplicaBounds(min=lo, max=hi))

    def prefill_stage(lo: int, hi: int) -> PrefillStage:
        ref = ScaleTargetRef(api_version="sim/v1", kind="Simulated", name="prefill")
        return PrefillStage(scale_target_ref=ref, replicas=ReplicaBounds(min=lo, max=hi))

    settings = scenario.planner
    spec = PDClusterSpec(
        datacenter="local",
        model=scenario.model,
        instance=pd.instance,
        instances=n,
        prefill=prefill_stage(min_p, n - min_d),
        decode=stage("decode", min_d, n - min_p),
        prefill_pools=[PoolLink(name=POOL_NAME, link=scenario.link)],
        workload=WorkloadSource(declared=scenario.workload),
        policy=Policy(
            mode="Enforce",
            cooldown_seconds=round(cooldown_s),
            max_step=1,
            threshold=ThresholdPolicy(step_tokens=settings.threshold_step_tokens),
            service_time=settings.service_time,
        ),
    )
    pool = PrefillPoolSpec(
        datacenter="remote",
        instance=scenario.prefill_pool.instance,
        replicas=ReplicaBounds(min=n_pool, max=n_pool),
        scale_target_ref=ScaleTargetRef(api_version="sim/v1", kind="Simulated", name="pool"),
    )
    return spec, pool


class SlowLoop:
    def __init__(
        self, scenario: Scenario, n_prefill: int, n_decode: int, n_pool: int, cooldown_s: float
    ) -> None:
        self.spec, self.pool = resources(scenario, n_prefill, n_decode, n_pool, cooldown_s)
        self.n_pool = n_pool
        self.workload = scenario.workload
        self.status = PDClusterStatus()
        self._plans: dict[str, PlanResult] = {}  # capacities and splits repeat
        # the pass at deployment (declared link, no traffic yet) publishes v1: the policy the
        # simulation starts with
        self.published = 0
        first = self.step(0.0, n_prefill, n_decode, scenario.link.capacity_gbps, 0.0)
        assert first.convert == 0 and first.policy is not None
        self.initial = first.policy

    def _plan(self, scenario: Scenario) -> PlanResult:
        key = scenario.model_dump_json()
        if key not in self._plans:
            self._plans[key] = plan(scenario)
        return self._plans[key]

    def step(
        self, now_s: float, n_prefill: int, n_decode: int, capacity_gbps: float, rate_rps: float
    ) -> Step:
        """One pass at simulated time ``now_s`` with the split serving now."""
        obs = Observation(
            "simulated",
            self.spec,
            {
                PREFILL: GroupObservation(n_prefill),
                DECODE: GroupObservation(n_decode),
                POOL: GroupObservation(self.n_pool),
            },
            Signals("Declared", self.workload, rate_rps),
            PoolObservation(self.spec.prefill_pools[0], self.pool),
            link_capacity_gbps=capacity_gbps,
        )
        now = _EPOCH + timedelta(seconds=now_s)
        decision = decide(obs, self.status, now, planner=self._plan)
        convert = 0
        if isinstance(decision, Decision):
            moves = {c.group: c.next - c.current for c in decision.to_apply}
            convert = moves.get(PREFILL, 0) if moves.get(PREFILL, 0) == -moves.get(DECODE, 0) else 0
            # machines are shared: a role changes only as a pair (one side alone would idle one)
            failed = {} if convert else dict.fromkeys(moves, "no instance to convert")
            decision = decision.outcome(failed)
        self.status = decision.status
        policy = self.status.routing_policy
        if policy is None or policy.version == self.published:
            return Step(convert, None)
        self.published = policy.version
        return Step(convert, RoutingPolicy.from_status(policy.model_dump(by_alias=True)))
