"""``PrefillPool``: a standalone prefill cluster (e.g. H200) in one datacenter."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from prfaas.api.common import (
    Conditions,
    Endpoints,
    Placement,
    ReplicaBounds,
    ScaleTargetRef,
)
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
    egress: Egress | None = None

    @rule("self.replicas.max >= 1", "replicas.max must allow at least one instance")
    def _can_run(self) -> bool:
        return self.replicas.max >= 1


class PrefillPoolStatus(Spec):
    observed_generation: int | None = Field(default=None, ge=0)
    replicas: int | None = Field(default=None, ge=0)  # what the scale target reports
    desired_replicas: int | None = Field(default=None, ge=0)  # what the operator planned
    phase: Literal["Pending", "Ready", "Degraded"] | None = None
    conditions: Conditions = Field(default_factory=list)


class PrefillPool(Spec):
    """A standalone prefill cluster: a stateless KVCache producer for PD clusters elsewhere."""

    api_version: Literal["prfaas.io/v1alpha1"] = "prfaas.io/v1alpha1"
    kind: Literal["PrefillPool"] = "PrefillPool"
    spec: PrefillPoolSpec
    status: PrefillPoolStatus | None = None
