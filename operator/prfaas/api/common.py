"""Field blocks shared by both CRDs: references, placement, bounds, conditions."""

from __future__ import annotations

import re
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


class Handoff(Spec):
    """The P/D protocol a prefill group's engines speak to hand the KVCache to decode.

    ``vllm`` (default): two phases, prefill with ``kv_transfer_params`` first, then decode with
    what prefill returned (vLLM's NIXL/Mooncake connectors). ``sglang``: the same request to
    prefill and decode at once with ``bootstrap_host`` (the prefill endpoint's host),
    ``bootstrap_port`` and ``bootstrap_room`` (SGLang with the Mooncake transfer engine). The
    decode engines must accept every protocol their prefill groups use.
    """

    protocol: Literal["vllm", "sglang"] = "vllm"
    bootstrap_port: int | None = Field(default=None, ge=1, le=65535)
    """SGLang's ``--disaggregation-bootstrap-port`` on the prefill engines; default 8998."""

    @rule(
        "self.protocol == 'sglang' || !has(self.bootstrapPort)",
        "handoff: bootstrapPort is for protocol sglang only",
    )
    def _port_for_sglang(self) -> bool:
        return self.protocol == "sglang" or self.bootstrap_port is None


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


DnsLabel = Annotated[
    str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]
LabelValue = Annotated[
    str, Field(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
]
# a qualified label key: an optional DNS-subdomain prefix and "/", then a name of at most 63
LABEL_KEY = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"  # noqa: E501
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class Endpoints(Spec):
    """Where the router sends this group's traffic; it forwards nowhere else.

    Fixed ``urls``, or the ready engines of ``service``'s EndpointSlices (or of those matching
    ``selector``) in the scale target's namespace, followed within seconds; terminating ones drain.
    """

    urls: list[Url] = Field(default_factory=list, max_length=256)
    service: DnsLabel | None = None
    """A Service: its EndpointSlices (label ``kubernetes.io/service-name``) list the engines."""
    selector: dict[str, LabelValue] | None = Field(default=None, max_length=16)
    """EndpointSlices whose labels include all of these (slices carry their Service's labels)."""
    port: DnsLabel | None = None
    """The EndpointSlice port to use, by name. Default: a slice's only port, else ``http``."""
    scheme: Literal["http", "https"] | None = None
    """Default: http."""

    @rule(
        "!(has(self.service) && has(self.selector))",
        "endpoints: give service or selector, not both",
    )
    def _one_source(self) -> bool:
        return self.service is None or self.selector is None

    @rule(
        "!(has(self.urls) && size(self.urls) > 0 && (has(self.service) || has(self.selector)))",
        "endpoints: give urls or a service/selector, not both",
    )
    def _urls_or_discovery(self) -> bool:
        return not (self.urls and self.discovers)

    @rule(
        "!has(self.selector) || (size(self.selector) > 0 && "
        f"self.selector.all(k, k.size() <= 317 && k.matches('{LABEL_KEY}')))",
        "endpoints.selector needs at least one label, with valid label keys",
    )
    def _selector_valid(self) -> bool:
        if self.selector is None:
            return True
        return bool(self.selector) and all(
            len(k) <= 317 and re.match(LABEL_KEY, k) for k in self.selector
        )

    @property
    def discovers(self) -> bool:
        """The endpoints come from EndpointSlices rather than from ``urls``."""
        return self.service is not None or self.selector is not None

    def label_selector(self) -> str | None:
        """The EndpointSlices' label selector, as the API's ``labelSelector`` parameter."""
        if self.service is not None:
            return f"{SERVICE_NAME_LABEL}={self.service}"
        if self.selector is not None:
            return ",".join(f"{k}={v}" for k, v in sorted(self.selector.items()))
        return None


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
