"""``PDCluster``: a local prefill/decode-disaggregated cluster (e.g. H20) and its PrfaaS policy."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from prfaas import metric_names as names
from prfaas.api.common import (
    Conditions,
    Endpoints,
    Handoff,
    Name,
    Placement,
    ReplicaBounds,
    ScaleTargetRef,
)
from prfaas.api.resource import AGE, Column, ResourceMeta, condition_column
from prfaas.model.base import Spec, rule
from prfaas.model.profiles import InstanceProfile, LinkProfile
from prfaas.model.scenario import ModelProfile
from prfaas.model.throughput import ServiceTime
from prfaas.model.workload import Workload

Seconds = Annotated[int, Field(ge=1, le=86_400)]
Endpoint = Annotated[str, Field(max_length=2048)]


class Stage(Spec):
    """One role of the PD cluster (prefill or decode): its scale target, bounds and endpoints."""

    scale_target_ref: ScaleTargetRef
    replicas: ReplicaBounds
    endpoints: Endpoints = Endpoints()


class PrefillStage(Stage):
    """The local prefill group (PD-P), and the P/D protocol its engines speak."""

    handoff: Handoff = Handoff()


class PoolLink(Spec):
    """A PrefillPool (same namespace) this cluster may offload to, and the link to it."""

    name: Name
    link: LinkProfile


_SCOPE = f'{{{names.PDCLUSTER_LABEL}=~"$pdcluster|"}}'
"""The default queries' selector: this PDCluster's routers (and unlabelled ones, as before)."""


class PrometheusQueries(Spec):
    """PromQL; ``$window`` is replaced by ``window`` and ``$pdcluster`` by this PDCluster,
    ``<namespace>/<name>`` (regex-escaped: use it with ``=~``). Defaults match the router's
    metric names and select this PDCluster's series (``pdcluster=~"<ns>/<name>|"``: routers
    labelled for it, and unlabelled ones), so several PDClusters can share one Prometheus."""

    arrival_rate: str = Field(
        default=f"sum(rate({names.ROUTER_REQUESTS}_total{_SCOPE}[$window]))", max_length=4096
    )
    uncached_length_buckets: str = Field(
        default=f"sum by (le) (increase({names.ROUTER_UNCACHED_TOKENS}_bucket{_SCOPE}[$window]))",
        max_length=4096,
    )
    output_tokens_mean: str = Field(
        default=(
            f"sum(rate({names.ROUTER_OUTPUT_TOKENS}_sum{_SCOPE}[$window])) / "
            f"sum(rate({names.ROUTER_OUTPUT_TOKENS}_count{_SCOPE}[$window]))"
        ),
        max_length=4096,
    )
    egress_gbps: str = Field(
        default=(
            f"sum by (pool) (rate({names.ROUTER_LINK_BYTES}_total{_SCOPE}[$window])) * 8 / 1e9"
        ),
        max_length=4096,
    )
    queue_depth: str = Field(
        default=f"sum by (role) ({names.ENGINE_REQUESTS_WAITING}{_SCOPE})", max_length=4096
    )


class PrometheusSource(Spec):
    url: str = Field(min_length=8, max_length=2048, pattern=r"^https?://\S+$")
    window: str = Field(default="5m", pattern=r"^[0-9]+(s|m|h)$", max_length=16)
    """Range of the rate()/increase() queries: the traffic the plan is made for."""
    queries: PrometheusQueries = PrometheusQueries()
    """Prometheus server that scrapes the routers (and engines)."""
    min_requests: Annotated[float, Field(ge=0)] = 50
    """Fewer requests than this in the window: signals are stale, the last plan holds."""
    max_length_tokens: Annotated[int, Field(gt=0, le=16_777_216)] = 131_072
    """Where the histogram's +Inf bucket ends (the longest prompt served)."""

    @property
    def window_seconds(self) -> int:
        unit = {"s": 1, "m": 60, "h": 3600}[self.window[-1]]
        return int(self.window[:-1]) * unit


class WorkloadSource(Spec):
    """Exactly one: measured from Prometheus, or declared."""

    prometheus: PrometheusSource | None = None
    declared: Workload | None = None

    @rule(
        "has(self.prometheus) != has(self.declared)",
        "workload: give exactly one of prometheus or declared",
    )
    def _exactly_one(self) -> bool:
        return (self.prometheus is None) != (self.declared is None)


class ThresholdPolicy(Spec):
    mode: Literal["Auto", "Fixed"] = "Auto"
    """Auto: solve t from the model every pass. Fixed: use ``tokens``."""
    tokens: Annotated[int, Field(ge=0, le=16_777_216)] | None = None
    """Offload prefills whose uncached length exceeds this (Fixed mode)."""
    step_tokens: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    """Grid step of the threshold search."""
    deadband_fraction: Annotated[float, Field(ge=0, le=1)] = 0.05
    """Auto: keep the published t while the new optimum is within this fraction of it.
    Measured signals are noisy; every new threshold resets the routers' short-timescale
    adaptation, so moves of a few percent cost more than they gain (0: follow every move)."""
    dwell_seconds: Annotated[int, Field(ge=0, le=86_400)] | None = None
    """Auto: an optimum beyond the deadband is published only once it has stayed beyond it, on
    the same side, for this long (then the latest optimum). Default: the Prometheus window for
    a measured workload (consecutive passes share most of a window, so a noisy excursion lasts
    several passes; a real shift outlasts a window), 0 for a declared one."""

    @rule(
        "self.mode != 'Fixed' || has(self.tokens)",
        "threshold.tokens is required when threshold.mode is Fixed",
    )
    def _fixed_needs_tokens(self) -> bool:
        return self.mode != "Fixed" or self.tokens is not None


class Policy(Spec):
    """How the slow loop acts: ``Observe`` only reports, ``Enforce`` also scales."""

    mode: Literal["Observe", "Enforce"] = "Observe"
    """Observe: plan and publish the routing policy, never scale. Enforce: also scale."""
    interval_seconds: Seconds = 60
    """Seconds from the start of one slow-loop pass to the next (a spec change triggers one at
    once; a pass that takes longer is followed one second after it ends)."""
    cooldown_seconds: Annotated[int, Field(ge=0, le=86_400)] = 300
    """A group scaled less than this long ago is not scaled again."""
    max_step: Annotated[int, Field(ge=1, le=1_000)] = 1
    """Most instances added to or removed from one group per change."""
    threshold: ThresholdPolicy = ThresholdPolicy()
    service_time: ServiceTime = "subset_mean"
    """Service-time convention of the model: mean over the subset, or at its mean length."""
    plan_pool_size: bool = False
    """Also search the PrefillPool's size within its replica bounds (else keep its size)."""


class SLO(Spec):
    ttft_seconds: Annotated[float, Field(gt=0, le=3600)] | None = None
    tpot_seconds: Annotated[float, Field(gt=0, le=60)] | None = None


class PDClusterSpec(Spec):
    datacenter: str = Field(min_length=1, max_length=63)
    """Where this cluster runs (informational)."""
    model: ModelProfile
    """The served model and its KVCache size by length."""
    instance: InstanceProfile
    """One local instance: prefill latency by length, and decode (BS_max, T_decode)."""
    instances: Annotated[int, Field(ge=2, le=10_000)]
    """N_p + N_d: the machines of this cluster, split between prefill and decode."""
    prefill: PrefillStage
    decode: Stage
    placement: Placement = Placement()
    """Where the prefill and decode targets live (this cluster, or a member cluster)."""
    prefill_pools: list[PoolLink] = Field(
        default_factory=list,
        max_length=8,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """PrefillPools (same namespace) this cluster may offload to, each with its link; all are
    used. A pool shared with other PDClusters is sized once from all their demand (the
    PrefillPool's own reconcile) and each cluster gets its share (status.poolShares)."""
    workload: WorkloadSource
    """What to plan for: measured from Prometheus, or declared."""
    policy: Policy = Policy()
    slo: SLO | None = None

    @rule(
        "self.prefill.replicas.min + self.decode.replicas.min <= self.instances",
        "prefill.replicas.min + decode.replicas.min must not exceed instances",
    )
    def _minima_fit(self) -> bool:
        return self.prefill.replicas.min + self.decode.replicas.min <= self.instances

    @rule(
        "self.prefill.replicas.max >= 1 && self.decode.replicas.max >= 1",
        "prefill and decode each need replicas.max >= 1",
    )
    def _both_can_run(self) -> bool:
        return self.prefill.replicas.max >= 1 and self.decode.replicas.max >= 1

    @rule(
        "!has(self.workload.declared) || self.policy.threshold.mode != 'Fixed' || "
        "(has(self.workload.declared.inputLength.lognormal) ? "
        "self.policy.threshold.tokens <= self.workload.declared.inputLength.lognormal.max : "
        "self.policy.threshold.tokens <= self.workload.declared.inputLength.histogram.max)",
        "policy.threshold.tokens must lie within the workload's length range",
    )
    def _fixed_threshold_in_range(self) -> bool:
        fixed, declared = self.policy.threshold, self.workload.declared
        if declared is None or fixed.mode != "Fixed" or fixed.tokens is None:
            return True  # a Fixed mode without tokens is ThresholdPolicy's rule
        return fixed.tokens <= declared.input_length.max_tokens

    @rule("has(self.instance.decode)", "instance.decode is required for a PD cluster")
    def _has_decode(self) -> bool:
        return self.instance.decode is not None


class StagesStatus(Spec):
    prfaas: float | None = None
    pd_prefill: float | None = None
    pd_decode: float | None = None


class PlanStatus(Spec):
    """The slow loop's current plan (the paper's Table 6 row for this cluster)."""

    threshold_tokens: int | None = None
    offload_fraction: float
    n_prfaas: int = Field(ge=0)
    n_prefill: int = Field(ge=0)
    n_decode: int = Field(ge=0)
    throughput_rps: float = Field(ge=0)
    stages: StagesStatus
    egress_gbps: float = Field(ge=0)
    binding: str = Field(max_length=63)
    homogeneous_rps: float | None = None
    computed_at: str = Field(json_schema_extra={"format": "date-time"})


class PoolRoute(Spec):
    name: Name
    endpoints: list[Endpoint] = Field(default_factory=list, max_length=256)
    link_budget_gbps: float = Field(ge=0)
    handoff: Handoff | None = None
    """The pool's P/D protocol; absent: vllm."""
    threshold_tokens: int | None = Field(default=None, ge=0)
    """This pool's own threshold (a fleet plan); absent: the policy's ``thresholdTokens``."""
    standby: bool | None = None
    """A pool the cluster reaches but its plan does not use: taken only while no planned
    pool is usable."""
    discovered: bool | None = None
    """The operator resolved these endpoints from the pool's EndpointSlices (not a spec's
    ``urls``): routers take them without checking their endpoint allowlist."""


class EndpointDiscovery(Spec):
    """Where the router finds a local group's engines itself: the ready endpoints of the
    EndpointSlices that ``labelSelector`` selects in ``namespace`` (its own cluster)."""

    namespace: Name
    label_selector: str = Field(min_length=1, max_length=4096)
    port: str | None = Field(default=None, max_length=63)
    scheme: Literal["http", "https"] | None = None


class RoutingPolicyStatus(Spec):
    """What the router enforces per request; ``version`` increases on every change.

    A PrefillPool's ``endpoints`` are its ready engines as the operator resolves them (in the
    pool's cluster); local groups are either ``*Endpoints`` or ``*Discovery`` for the router."""

    version: int = Field(ge=0)
    threshold_tokens: int | None = None
    prefill_pools: list[PoolRoute] = Field(default_factory=list, max_length=8)
    prefill_endpoints: list[Endpoint] = Field(default_factory=list, max_length=256)
    decode_endpoints: list[Endpoint] = Field(default_factory=list, max_length=256)
    prefill_discovery: EndpointDiscovery | None = None
    decode_discovery: EndpointDiscovery | None = None
    prefill_handoff: Handoff | None = None
    """The local prefill group's P/D protocol; absent: vllm."""


class PendingThresholdStatus(Spec):
    """An optimum beyond the deadband of the published threshold, not yet published: it is
    once it has stayed beyond it on the same side for ``threshold.dwellSeconds``."""

    tokens: int = Field(ge=0)
    """The latest optimum."""
    since: str = Field(json_schema_extra={"format": "date-time"})
    """First pass it was seen beyond the deadband on this side."""


class SignalsStatus(Spec):
    """The inputs of the last plan, as observed."""

    source: Literal["Prometheus", "Declared"]
    arrival_rate_rps: float | None = None
    mean_uncached_tokens: float | None = None
    output_tokens: float | None = None
    egress_gbps: float | None = None
    observed_at: str = Field(json_schema_extra={"format": "date-time"})


class ReplicasStatus(Spec):
    """Replicas of each scalable group, as observed at the last reconcile."""

    prefill_pool: int | None = Field(default=None, ge=0)
    prefill: int | None = Field(default=None, ge=0)
    decode: int | None = Field(default=None, ge=0)


class ScaledAtStatus(Spec):
    """When the operator last scaled each group (the cooldown survives restarts)."""

    prefill_pool: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    prefill: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    decode: str | None = Field(default=None, json_schema_extra={"format": "date-time"})


class ContestedStatus(Spec):
    """Groups whose replicas another writer changed; the operator leaves them alone until the
    spec changes (``generation`` moves) or they reach the plan on their own."""

    groups: list[Annotated[str, Field(max_length=63)]] = Field(default_factory=list, max_length=3)
    generation: int | None = Field(default=None, ge=0)
    since: str = Field(json_schema_extra={"format": "date-time"})


class PoolShareStatus(Spec):
    """This cluster's share of one PrefillPool in the fleet plan (several PDClusters or pools)."""

    pool: Name
    fraction: float = Field(ge=0, le=1)
    """Of this cluster's offloaded requests."""
    rate_rps: float = Field(ge=0)
    instances: float = Field(ge=0)
    """Pool instances busy with this cluster's requests."""
    egress_gbps: float = Field(ge=0)
    threshold_tokens: int | None = Field(default=None, ge=0)


class PDClusterStatus(Spec):
    observed_generation: int | None = Field(default=None, ge=0)
    phase: Literal["Pending", "Planned", "Applied", "Holding", "Degraded"] | None = None
    plan: PlanStatus | None = None
    routing_policy: RoutingPolicyStatus | None = None
    pending_threshold: PendingThresholdStatus | None = None
    signals: SignalsStatus | None = None
    last_applied_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    replicas: ReplicasStatus | None = None
    scaled_at: ScaledAtStatus | None = None
    contested: ContestedStatus | None = None
    pool_shares: list[PoolShareStatus] | None = Field(default=None, max_length=8)
    """Fleet mode (a pool shared with other PDClusters, or several pools): this cluster's
    share of each pool it uses."""
    workload: Workload | None = None
    """Fleet mode: the last good workload (measured or declared) every planner of the
    namespace plans this cluster's demand from."""
    conditions: Conditions = Field(default_factory=list)


class PDCluster(Spec):
    """A local PD cluster that offloads long prefills to PrefillPools under the PrfaaS policy."""

    resource: ClassVar[ResourceMeta] = ResourceMeta(
        kind="PDCluster",
        plural="pdclusters",
        short_names=("pdc",),
        columns=(
            Column("Mode", "string", ".spec.policy.mode"),
            Column("Threshold", "integer", ".status.plan.thresholdTokens"),
            Column("Np", "integer", ".status.plan.nPrefill"),
            Column("Nd", "integer", ".status.plan.nDecode"),
            Column("Throughput", "number", ".status.plan.throughputRps"),
            Column("Phase", "string", ".status.phase"),
            condition_column("Ready", "Ready"),
            Column("Policy", "integer", ".status.routingPolicy.version", priority=1),
            AGE,
        ),
    )

    api_version: str = resource.api_version_field()
    kind: str = resource.kind_field()
    spec: PDClusterSpec
    status: PDClusterStatus | None = None
