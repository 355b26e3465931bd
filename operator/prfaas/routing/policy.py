"""The slow loop's routing policy, as the operator publishes it in ``status.routingPolicy``.

Plain frozen dataclasses rather than the CRD's pydantic models: the router swaps a policy in on
every status change and reads it on every request, and this package must not depend on ``api``.
``RoutingPolicy.from_status`` reads the published JSON (camelCase, as in the status/ConfigMap).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any


class PolicyError(ValueError):
    """A published policy that cannot be used; the message names the field."""


VLLM, SGLANG = "vllm", "sglang"
SGLANG_BOOTSTRAP_PORT = 8998  # SGLang's default --disaggregation-bootstrap-port


@dataclass(frozen=True, slots=True)
class Handoff:
    """How a prefill group hands its KVCache to decode. ``vllm``: two phases, prefill with
    ``kv_transfer_params.do_remote_decode`` first, then decode with what it returned. ``sglang``:
    the same request to prefill and decode at once, paired by ``bootstrap_room``; decode pulls
    from ``bootstrap_host`` (the prefill endpoint's host) at ``bootstrap_port``."""

    protocol: str = VLLM
    bootstrap_port: int = SGLANG_BOOTSTRAP_PORT

    @property
    def sglang(self) -> bool:
        return self.protocol == SGLANG


@dataclass(frozen=True, slots=True)
class PoolRoute:
    """A PrefillPool the cluster may offload to, and the egress budget of the link to it.

    ``threshold_tokens``: this pool's own t (a fleet plan gives each cluster-pool pair one);
    ``None``: the policy's ``threshold_tokens``. ``standby``: a pool the cluster can reach but
    the plan does not use, taken only while every other pool is unusable (per-pool fail-over).
    """

    name: str
    endpoints: tuple[str, ...] = ()
    link_budget_gbps: float = 0.0
    threshold_tokens: int | None = None
    standby: bool = False  # used only while no other (primary) pool is usable
    handoff: Handoff = Handoff()


@dataclass(frozen=True, slots=True)
class EndpointSource:
    """A local group whose engines the router finds itself: the ready endpoints of the
    EndpointSlices ``label_selector`` selects in ``namespace``, on port ``port`` (by name)."""

    namespace: str
    label_selector: str
    port: str | None = None
    scheme: str = "http"


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """Offload iff uncached length > ``threshold_tokens``; ``None`` means never offload.

    A local group's engines are its ``*_endpoints`` plus, with a ``*_source``, the ready ones
    found there (``with_found``)."""

    version: int = 0
    threshold_tokens: int | None = None
    pools: tuple[PoolRoute, ...] = ()
    prefill_endpoints: tuple[str, ...] = ()
    decode_endpoints: tuple[str, ...] = ()
    prefill_source: EndpointSource | None = None
    decode_source: EndpointSource | None = None
    prefill_handoff: Handoff = Handoff()  # the local PD-P group's

    @property
    def sources(self) -> tuple[EndpointSource, ...]:
        return tuple(s for s in (self.prefill_source, self.decode_source) if s is not None)

    def with_found(self, found: Mapping[EndpointSource, Sequence[str]]) -> RoutingPolicy:
        """The policy with each source's endpoints (as ``found`` lists them now) added to its
        group's; a source not found yet adds none."""
        if not self.sources:
            return self
        return replace(
            self,
            prefill_endpoints=_plus(self.prefill_endpoints, self.prefill_source, found),
            decode_endpoints=_plus(self.decode_endpoints, self.decode_source, found),
        )

    def plan_key(self) -> tuple[object, ...]:
        """What the slow loop planned: the threshold and the pools' budgets, not which engines
        serve them (engines come and go between plans)."""
        return (self.threshold_tokens, tuple((p.name, p.link_budget_gbps) for p in self.pools))

    @property
    def offloads(self) -> bool:
        return any(self.threshold_for(i) is not None for i in range(len(self.pools)))

    @property
    def has_standby(self) -> bool:
        return any(p.standby for p in self.pools)

    def threshold_for(self, pool: int) -> int | None:
        """The threshold of ``pools[pool]``: its own, else the policy's."""
        own = self.pools[pool].threshold_tokens
        return self.threshold_tokens if own is None else own

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> RoutingPolicy:
        """Parse ``status.routingPolicy`` (or the ``policy.json`` of the member ConfigMap)."""
        version = _int(status.get("version", 0), "version")
        raw_t = status.get("thresholdTokens")
        threshold = None if raw_t is None else _int(raw_t, "thresholdTokens")
        pools = []
        raw_pools = status.get("prefillPools", [])
        if not isinstance(raw_pools, Sequence) or isinstance(raw_pools, str):
            raise PolicyError("prefillPools: expected a list")
        for i, raw in enumerate(raw_pools):
            where = f"prefillPools[{i}]"
            if not isinstance(raw, Mapping):
                raise PolicyError(f"{where}: expected an object")
            name = raw.get("name")
            if not isinstance(name, str) or not name:
                raise PolicyError(f"{where}.name: expected a non-empty string")
            budget = raw.get("linkBudgetGbps", 0.0)
            if isinstance(budget, bool) or not isinstance(budget, int | float):
                raise PolicyError(f"{where}.linkBudgetGbps: expected a number")
            if not math.isfinite(budget) or budget < 0:
                raise PolicyError(f"{where}.linkBudgetGbps: must be finite and >= 0")
            raw_own = raw.get("thresholdTokens")
            own = None if raw_own is None else _int(raw_own, f"{where}.thresholdTokens")
            endpoints = _strings(raw.get("endpoints", []), f"{where}.endpoints")
            standby = raw.get("standby")
            standby = False if standby is None else standby  # null: absent (dumped with None)
            if not isinstance(standby, bool):
                raise PolicyError(f"{where}.standby: expected true or false")
            handoff = _handoff(raw.get("handoff"), f"{where}.handoff")
            pools.append(PoolRoute(name, endpoints, budget, own, standby, handoff))
        return cls(
            version=version,
            threshold_tokens=threshold,
            pools=tuple(pools),
            prefill_endpoints=_strings(status.get("prefillEndpoints", []), "prefillEndpoints"),
            decode_endpoints=_strings(status.get("decodeEndpoints", []), "decodeEndpoints"),
            prefill_source=_source(status.get("prefillDiscovery"), "prefillDiscovery"),
            decode_source=_source(status.get("decodeDiscovery"), "decodeDiscovery"),
            prefill_handoff=_handoff(status.get("prefillHandoff"), "prefillHandoff"),
        )


def _plus(
    urls: tuple[str, ...],
    source: EndpointSource | None,
    found: Mapping[EndpointSource, Sequence[str]],
) -> tuple[str, ...]:
    extra = found.get(source, ()) if source is not None else ()
    return urls + tuple(u for u in extra if u not in urls)


def _source(raw: Any, where: str) -> EndpointSource | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: expected an object")
    fields = {}
    for key in ("namespace", "labelSelector"):
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            raise PolicyError(f"{where}.{key}: expected a non-empty string")
        fields[key] = value
    port, scheme = raw.get("port"), raw.get("scheme") or "http"
    if port is not None and not isinstance(port, str):
        raise PolicyError(f"{where}.port: expected a string")
    if scheme not in ("http", "https"):
        raise PolicyError(f"{where}.scheme: expected http or https")
    return EndpointSource(fields["namespace"], fields["labelSelector"], port or None, scheme)


def _handoff(raw: Any, where: str) -> Handoff:
    if raw is None:
        return Handoff()
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: expected an object")
    protocol = raw.get("protocol") or VLLM
    if protocol not in (VLLM, SGLANG):
        raise PolicyError(f"{where}.protocol: expected {VLLM} or {SGLANG}, got {protocol!r}")
    port = raw.get("bootstrapPort")
    if port is None:
        return Handoff(protocol)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise PolicyError(f"{where}.bootstrapPort: expected a port (1-65535), got {port!r}")
    return Handoff(protocol, port)


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PolicyError(f"{where}: expected an integer >= 0, got {value!r}")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise PolicyError(f"{where}: expected a list of strings")
    if not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where}: expected a list of strings")
    return tuple(value)
