"""What one slow-loop pass saw: plain data, filled by the operator or by the simulator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from prfaas.api.pdcluster import PDClusterSpec, PoolLink
from prfaas.api.prefillpool import PrefillPoolSpec, PrefillPoolStatus
from prfaas.model.workload import Workload

GroupName = Literal["prefillPool", "prefill", "decode"]
POOL: GroupName = "prefillPool"
PREFILL: GroupName = "prefill"
DECODE: GroupName = "decode"


@dataclass(frozen=True)
class Signals:
    """Traffic the plan is made for, declared or measured."""

    source: Literal["Prometheus", "Declared"]
    workload: Workload
    arrival_rate_rps: float | None
    egress_gbps: dict[str, float] = field(default_factory=dict)
    queue_depth: dict[str, float] = field(default_factory=dict)
    samples: float | None = None  # requests behind the length histogram


@dataclass(frozen=True)
class SignalsUnavailable:
    """No fresh signals: the last good plan holds. ``reason`` is a condition reason."""

    reason: str
    message: str


@dataclass(frozen=True)
class GroupObservation:
    """One scalable group's ``/scale`` as read now."""

    replicas: int | None  # None: could not be read
    error: str | None = None
    reachable: bool = True  # False: its cluster did not answer (True + error: target invalid)
    reason: str | None = None  # condition reason for ``error`` (default from ``reachable``)
    unschedulable: tuple[str, ...] = ()  # "pod: scheduler's message" of pods left Pending

    @property
    def known(self) -> bool:
        return self.reachable and self.replicas is not None


@dataclass(frozen=True)
class PoolObservation:
    """The PrefillPool the PD cluster offloads to (v1alpha1: the first one it lists)."""

    link: PoolLink
    spec: PrefillPoolSpec | None  # None: not found or invalid (``problem`` says which)
    problem: tuple[str, str] | None = None  # (condition reason, message)
    generation: int | None = None  # the PrefillPool's metadata.generation
    status: PrefillPoolStatus | None = None  # as last written
    endpoints: tuple[str, ...] | None = None
    """Its ready engines, from its EndpointSlices (in its cluster) now; None: not known now,
    or the pool lists fixed URLs."""


@dataclass(frozen=True)
class Observation:
    name: str  # the PDCluster's name
    spec: PDClusterSpec
    groups: dict[GroupName, GroupObservation]
    signals: Signals | SignalsUnavailable
    pool: PoolObservation | None = None
    link_capacity_gbps: float | None = None
    """Measured capacity of the link to the pool (None: plan for the declared link)."""
    namespace: str = "default"
    """The PDCluster's namespace (where its groups' EndpointSlices are, unless a
    ``scaleTargetRef`` names another)."""

    @property
    def usable_pool(self) -> PrefillPoolSpec | None:
        return self.pool.spec if self.pool is not None else None
