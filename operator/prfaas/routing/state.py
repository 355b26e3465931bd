"""Live state the router keeps current and ``decide`` reads: plain mutable objects with slots.

They change only through their own methods and ``Router``'s (dispatch, KV in flight, health,
queue depths, following a policy), so every counter has one place that moves it; nothing here
allocates per request.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

BITS_PER_BYTE = 8
GBIT = 1e9


class Mode(enum.IntEnum):
    """Paper §3.4.3: which prefix caches count when deciding where to prefill."""

    SCARCE = 0  # judge each cluster's cache on its own; no cross-cluster cache transfers
    ABUNDANT = 1  # use the best cache anywhere and move it across if needed


class InstanceState:
    """One prefill instance: its load (outstanding uncached tokens) and health."""

    __slots__ = ("healthy", "load", "name")

    def __init__(self, name: str, load: float = 0.0, healthy: bool = True) -> None:
        self.name = name
        self.load = load
        self.healthy = healthy


class TargetState:
    """A prefill target: the local PD-P instances, or one PrefillPool's instances."""

    __slots__ = ("healthy", "instances", "name", "waiting")

    def __init__(self, name: str, instances: Sequence[InstanceState], healthy: bool = True) -> None:
        self.name = name
        self.instances = list(instances)
        self.healthy = healthy
        self.waiting = 0  # requests queued, not yet computing (vllm:num_requests_waiting)

    @classmethod
    def of(cls, name: str, count: int) -> TargetState:
        return cls(name, [InstanceState(f"{name}-{k}") for k in range(count)])

    def set_healthy(self, healthy: bool, instance: int | str | None = None) -> None:
        """The target's health, or with ``instance`` (a position or a name) one instance's."""
        if instance is None:
            self.healthy = healthy
        elif isinstance(instance, int):
            self.instances[instance].healthy = healthy
        else:
            for inst in self.instances:
                if inst.name == instance:
                    inst.healthy = healthy

    def set_waiting(self, waiting: int) -> None:
        """Requests queued here, as telemetry reports them."""
        self.waiting = waiting

    def add_waiting(self, delta: int) -> None:
        """``delta`` requests joined (negative: left) the queue, for a caller that keeps it live."""
        self.waiting += delta

    def follow(self, names: Sequence[str]) -> None:
        """Make instance ``k`` the endpoint ``names[k]``: an instance whose name stays listed keeps
        its state (load, health) wherever it moves; new names start idle and healthy."""
        old: dict[str, InstanceState] = {}
        for inst in self.instances:
            old.setdefault(inst.name, inst)
        self.instances[:] = [old.pop(n) if n in old else InstanceState(n) for n in names]

    def healthy_instances(self) -> int:
        return sum(1 for i in self.instances if i.healthy) if self.healthy else 0

    def queue_per_instance(self) -> float:
        n = self.healthy_instances()
        return self.waiting / n if n else math.inf


class LinkState:
    """The inter-datacenter link from a PrefillPool to this PD cluster, as the router meters it.

    ``bytes_in_flight`` is this router's own; with a pool-side reading (``reported``: what the
    pool's engines offered and have not sent, every replica's alike) the link holds that plus
    what this router sent since the reading (``in_flight``), so N replicas see one link."""

    __slots__ = (
        "budget_gbps",
        "bytes_in_flight",
        "capacity_gbps",
        "egress_gbps",
        "healthy",
        "name",
        "reported",
        "retry_at",
        "since_report",
    )

    def __init__(self, name: str, budget_gbps: float, capacity_gbps: float | None = None) -> None:
        self.name = name
        self.budget_gbps = budget_gbps  # from the policy: what the planner may use
        self.capacity_gbps = budget_gbps if capacity_gbps is None else capacity_gbps  # measured
        self.egress_gbps = 0.0  # recent egress (EWMA of metered bytes)
        self.bytes_in_flight = 0.0  # KV bytes sent to the link and not yet delivered
        self.reported: float | None = None  # the pool side's bytes in flight; None: no reading
        self.since_report = 0.0  # own bytes sent since that reading
        self.healthy = True
        self.retry_at = -math.inf  # when a failed link may be probed again

    def set_healthy(self, healthy: bool) -> None:
        self.healthy = healthy

    def failed(self, retry_at: float) -> None:
        """A transfer over the link failed: down until ``retry_at``, then half-open."""
        self.healthy = False
        self.retry_at = retry_at

    def reopen(self, now: float) -> None:
        """Let traffic probe a failed link again once its retry time has come."""
        if not self.healthy and now >= self.retry_at:
            self.healthy = True

    def sent(self, nbytes: float) -> None:
        self.bytes_in_flight += nbytes
        self.since_report += nbytes

    def report(self, pending: float | None) -> None:
        """The pool side's bytes in flight now (None: no reading, own accounting only)."""
        self.reported = pending
        self.since_report = 0.0

    def in_flight(self) -> float:
        """Bytes on the link: the pool-side reading plus what this router sent since (those of
        its own still in flight), else this router's own."""
        if self.reported is None:
            return self.bytes_in_flight
        return self.reported + min(self.since_report, self.bytes_in_flight)

    def landed(self, nbytes: float) -> None:
        self.bytes_in_flight = max(0.0, self.bytes_in_flight - nbytes)

    def measured(self, capacity_gbps: float, bytes_in_flight: float) -> None:
        """Telemetry from a model of the link itself (the simulator's): its capacity, down at 0,
        and the bytes it holds, which replace the router's own accounting."""
        self.capacity_gbps = capacity_gbps
        self.healthy = capacity_gbps > 0
        self.bytes_in_flight = bytes_in_flight

    def usable_gbps(self) -> float:
        if not self.healthy:
            return 0.0
        return max(0.0, min(self.budget_gbps, self.capacity_gbps))

    def utilisation(self) -> float:
        usable = self.usable_gbps()
        return self.egress_gbps / usable if usable > 0 else math.inf

    def backlog_seconds(self) -> float:
        """Time to drain what is in flight at the usable rate."""
        usable, held = self.usable_gbps(), self.in_flight()
        if held <= 0:
            return 0.0
        return held * BITS_PER_BYTE / GBIT / usable if usable > 0 else math.inf


class PoolState:
    """One PrefillPool as the fast loop sees it: target, link, mode and threshold factor."""

    __slots__ = ("factor", "last_change", "link", "mode", "target")

    def __init__(self, target: TargetState, link: LinkState, mode: Mode = Mode.ABUNDANT) -> None:
        self.target = target
        self.link = link
        self.mode = mode
        self.factor = 1.0  # t_eff = t × factor (short-timescale adaptation)
        self.last_change = -math.inf

    def usable(self) -> bool:
        """Fail open: an unhealthy pool or link is never a prefill target."""
        return (
            self.target.healthy
            and self.link.usable_gbps() > 0
            and any(i.healthy for i in self.target.instances)
        )

    def threshold(self, t: int) -> int:
        return int(t * self.factor) if self.factor != 1.0 else t


class LiveState:
    """All live inputs of ``decide``; ``pools`` is aligned with ``RoutingPolicy.pools``."""

    __slots__ = ("local", "pools")

    def __init__(self, local: TargetState, pools: Sequence[PoolState] = ()) -> None:
        self.local = local
        self.pools = list(pools)

    def pool(self, name: str) -> PoolState | None:
        for p in self.pools:
            if p.target.name == name:
                return p
        return None
