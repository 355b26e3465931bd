"""``PrefillPool``: a standalone prefill cluster (e.g. H200) in one datacenter."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from prfaas.api.common import (
    Conditions,
    Endpoints,
    Handoff,
    Placement,
    ReplicaBounds,
    ScaleTargetRef,
)
from prfaas.api.resource import AGE, Column, ResourceMeta
from prfaas.model.base import Spec, rule
from prfaas.model.profiles import InstanceProfile


class Egress(Spec):
    """The pool's datacenter egress, shared by every PD cluster that uses the pool."""

    capacity_gbps: Annotated[float, Field(gt=0, le=1_000_000)]
    usable_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0


class PrefillPoolSpec(Spec):
    datacenter: str = Field(min_length=1, max_length=63)
    instance: InstanceProfile
    replicas: ReplicaBounds
    scale_target_ref: ScaleTargetRef
    placement: Placement = Placement()
    endpoints: Endpoints = Endpoints()
    handoff: Handoff = Handoff()
    """The P/D protocol the pool's engines speak (``vllm`` or ``sglang``)."""
    egress: Egress | None = None

    @rule("self.replicas.max >= 1", "replicas.max must allow at least one instance")
    def _can_run(self) -> bool:
        return self.replicas.max >= 1


class PoolUserStatus(Spec):
    """A PDCluster that uses the pool, and its share of it in the fleet plan."""

    pdcluster: str = Field(min_length=1, max_length=253)
    instances: float = Field(ge=0)
    """Pool instances busy with its offloaded requests."""
    rate_rps: float = Field(ge=0)
    egress_gbps: float = Field(ge=0)


class PrefillPoolStatus(Spec):
    observed_generation: int | None = Field(default=None, ge=0)
    replicas: int | None = Field(default=None, ge=0)  # what the scale target reports
    desired_replicas: int | None = Field(default=None, ge=0)  # what the operator planned
    phase: Literal["Pending", "Ready", "Degraded"] | None = None
    planned_by: Literal["PDCluster", "Fleet"] | None = None
    """PDCluster: its only user sizes it (one pool, one cluster). Fleet: the pool's own
    reconcile sizes it from the plan of every PDCluster of the namespace."""
    users: list[PoolUserStatus] | None = Field(default=None, max_length=1000)
    """Fleet: the PDClusters that list it, with their shares (sum: the busy instances)."""
    scaled_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    """Fleet: when the pool's reconcile last scaled it (its cooldown survives restarts)."""
    contested_generation: int | None = Field(default=None, ge=0)
    """Fleet: another writer changed the pool's replicas at this generation of the pool; the
    operator leaves them alone until the pool's spec changes or they reach the plan."""
    conditions: Conditions = Field(default_factory=list)


class PrefillPool(Spec):
    """A standalone prefill cluster: a stateless KVCache producer for PD clusters elsewhere."""

    resource: ClassVar[ResourceMeta] = ResourceMeta(
        kind="PrefillPool",
        plural="prefillpools",
        short_names=("pp", "prefillpool"),
        columns=(
            Column("Datacenter", "string", ".spec.datacenter"),
            Column("Accelerator", "string", ".spec.instance.accelerator"),
            Column("Desired", "integer", ".status.desiredReplicas"),
            Column("Replicas", "integer", ".status.replicas"),
            Column("Phase", "string", ".status.phase"),
            Column("Planned-By", "string", ".status.plannedBy", priority=1),
            AGE,
        ),
    )

    api_version: str = resource.api_version_field()
    kind: str = resource.kind_field()
    spec: PrefillPoolSpec
    status: PrefillPoolStatus | None = None
