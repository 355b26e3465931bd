"""Field blocks shared by both CRDs: references, placement, bounds, conditions."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from prfaas.model.base import Spec, rule

Name = Annotated[
    str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
]
Replicas = Annotated[int, Field(ge=0, le=10_000)]
Url = Annotated[str, Field(min_length=8, max_length=2048, pattern=r"^https?://[^\s/]+(/\S*)?$")]


class ScaleTargetRef(Spec):
    """Any object with a ``/scale`` subresource (Deployment, StatefulSet, LeaderWorkerSet, …)."""

    api_version: str = Field(default="apps/v1", min_length=1, max_length=253)
    kind: str = Field(min_length=1, max_length=63)
    name: Name
    namespace: Name | None = None
    """Default: the custom resource's namespace."""

    @rule("self.kind != '' && self.name != ''", "scaleTargetRef needs kind and name")
    def _named(self) -> bool:
        return self.kind != "" and self.name != ""


class SecretKeyRef(Spec):
    name: Name
    key: str = Field(default="kubeconfig", min_length=1, max_length=253)


class Placement(Spec):
    """Where a group runs: this cluster, or a member cluster reached through a kubeconfig Secret.

    The Secret lives in the custom resource's namespace (the operator reads Secrets only there).
    """

    kubeconfig_secret_ref: SecretKeyRef | None = None


class ReplicaBounds(Spec):
    min: Replicas = 0
    max: Replicas

    @rule(
        "self.min <= self.max",
        "replicas: min must not exceed max",
        detail=lambda s: f"replicas: min ({s.min}) must not exceed max ({s.max})",
    )
    def _ordered(self) -> bool:
        return self.min <= self.max

    def clamp(self, value: int) -> int:
        return max(self.min, min(self.max, value))


class Endpoints(Spec):
    """Where the router sends this group's traffic; it forwards nowhere else."""

    urls: list[Url] = Field(default_factory=list, max_length=256)


class Condition(Spec):
    """A KEP-1623 condition."""

    type: str = Field(min_length=1, max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(
        min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    )
    message: str = Field(default="", max_length=32768)
    observed_generation: int | None = Field(default=None, ge=0)
    last_transition_time: str = Field(json_schema_extra={"format": "date-time"})


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]
