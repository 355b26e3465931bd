"""What a simulation run is told besides the scenario: load, arrival process, link schedule,
prefix caches, SLO, seed. Validated on construction; ``SimError`` names the offending option."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from prfaas.routing.config import RoutingConfig

PolicyName = Literal["homogeneous", "naive", "prfaas_static", "prfaas"]
POLICIES: tuple[PolicyName, ...] = ("homogeneous", "naive", "prfaas_static", "prfaas")
ArrivalKind = Literal["poisson", "bursty", "trace"]
DEFAULT_REQUESTS = 20_000
DEFAULT_LOAD = 0.9  # × the homogeneous plan's Λ_max: a load the baseline can just sustain


class SimError(ValueError):
    """Bad simulation input; the message names the option (and the trace line)."""


def _positive(value: float, what: str, allow_zero: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise SimError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {value:g}")


@dataclass(frozen=True)
class Bursts:
    """Markov-modulated on/off Poisson: ``factor`` × the mean rate while on (exponential
    periods of mean ``on_s``), the rest while off (mean ``off_s``), same mean rate overall."""

    factor: float = 1.5
    on_s: float = 60.0
    off_s: float = 120.0

    def __post_init__(self) -> None:
        _positive(self.factor, "burst factor")
        _positive(self.on_s, "burst on-period")
        _positive(self.off_s, "burst off-period")
        if self.factor < 1:
            raise SimError(f"burst factor must be >= 1, got {self.factor:g}")
        on_share = self.on_s / (self.on_s + self.off_s)
        if self.factor * on_share > 1 + 1e-9:
            raise SimError(
                f"burst factor {self.factor:g} with on {self.on_s:g} s / off {self.off_s:g} s "
                f"needs more than the mean rate while on: keep factor <= {1 / on_share:.3g}"
            )

    def rates(self, mean: float) -> tuple[float, float]:
        on_share = self.on_s / (self.on_s + self.off_s)
        on = self.factor * mean
        return on, max(0.0, (mean - on * on_share) / (1 - on_share))


@dataclass(frozen=True)
class LinkSchedule:
    """Piecewise-constant link capacity: ``(start_s, gbps)`` points; before the first point the
    scenario's capacity holds. 0 Gbps is a link outage (routers fail open)."""

    points: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        last = -math.inf
        for start, gbps in self.points:
            _positive(start, "link schedule time", allow_zero=True)
            _positive(gbps, "link schedule capacity", allow_zero=True)
            if start <= last:
                raise SimError("link schedule: times must be strictly increasing")
            last = start

    @classmethod
    def parse(cls, text: str) -> LinkSchedule:
        """``"600:10,900:100"``: 10 Gbps from t=600 s, 100 Gbps again from t=900 s."""
        points = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            start, sep, gbps = part.partition(":")
            try:
                if not sep:
                    raise ValueError
                points.append((float(start), float(gbps)))
            except ValueError:
                raise SimError(
                    f"link schedule: expected START_S:GBPS[,START_S:GBPS...], got {part!r}"
                ) from None
        return cls(tuple(points))


@dataclass(frozen=True)
class PrefixSettings:
    """Prefix caches. With a trace that has ``hash_ids`` the caches are real indexes filled as
    prefills complete; otherwise, per request, cluster X holds a cached prefix of
    ``cached_fraction`` of the prompt with probability ``hit_rate_X`` (uneven caches: set the
    two rates apart)."""

    hit_rate_pd: float = 0.0
    hit_rate_pool: float = 0.0
    cached_fraction: float = 0.5
    snapshot_interval_blocks: int = 0
    capacity_blocks: int = 1 << 20
    use_hash_ids: bool = True

    def __post_init__(self) -> None:
        for value, what in (
            (self.hit_rate_pd, "PD hit rate"),
            (self.hit_rate_pool, "pool hit rate"),
            (self.cached_fraction, "cached fraction"),
        ):
            if not 0 <= value <= 1:
                raise SimError(f"{what} must be within [0, 1], got {value:g}")
        if self.snapshot_interval_blocks < 0 or self.capacity_blocks < 1:
            raise SimError("snapshot interval must be >= 0 and cache capacity >= 1 block")


@dataclass(frozen=True)
class SLO:
    """TTFT target for the P90 (sustainable rate) and for goodput; TPOT from the decode profile
    when not given."""

    ttft_s: float = 20.0
    tpot_s: float | None = None

    def __post_init__(self) -> None:
        _positive(self.ttft_s, "SLO TTFT")
        if self.tpot_s is not None:
            _positive(self.tpot_s, "SLO TPOT")


@dataclass(frozen=True)
class SimOptions:
    rate_rps: float | None = None  # None: DEFAULT_LOAD × homogeneous Λ_max (trace: its own)
    requests: int | None = None  # None with no duration: DEFAULT_REQUESTS
    duration_s: float | None = None  # arrivals during [0, duration)
    drain_s: float | None = None  # stop this long after the last arrival; None: run to empty
    arrivals: ArrivalKind = "poisson"
    bursts: Bursts = field(default_factory=Bursts)
    trace: Path | None = None
    link: LinkSchedule = field(default_factory=LinkSchedule)
    prefix: PrefixSettings = field(default_factory=PrefixSettings)
    slo: SLO = field(default_factory=SLO)
    seed: int = 0
    policies: tuple[PolicyName, ...] = POLICIES
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    tick_s: float = 1.0  # telemetry / short-timescale period
    replan_s: float = 60.0  # slow loop period (the operator's default interval)
    role_change_s: float = 120.0  # an instance changing role: drained, then this long to restart
    stable_s: float = 180.0  # the slow loop acts on a capacity only once it has held this long
    cooldown_s: float = 300.0  # between role conversions (the operator's default cooldown)
    bucket_s: float | None = None  # time-series resolution; None: about 200 buckets
    rdma_gbps: float = 800.0  # intra-cluster PD-P → PD-D (layer-pipelined, not shared)

    def __post_init__(self) -> None:
        if self.rate_rps is not None:
            _positive(self.rate_rps, "arrival rate")
        if self.requests is not None and self.requests < 1:
            raise SimError(f"requests must be >= 1, got {self.requests}")
        if self.duration_s is not None:
            _positive(self.duration_s, "duration")
        if self.drain_s is not None:
            _positive(self.drain_s, "drain", allow_zero=True)
        if self.arrivals == "trace" and self.trace is None:
            raise SimError("arrivals 'trace' needs a trace file")
        if self.arrivals not in ("poisson", "bursty", "trace"):
            raise SimError(f"unknown arrival process {self.arrivals!r}")
        unknown = [p for p in self.policies if p not in POLICIES]
        if unknown:
            raise SimError(f"unknown policy {unknown[0]!r} (choose from {', '.join(POLICIES)})")
        if not self.policies:
            raise SimError("no policy to simulate")
        _positive(self.tick_s, "tick")
        _positive(self.replan_s, "replan interval")
        _positive(self.role_change_s, "role change time", allow_zero=True)
        _positive(self.stable_s, "stable time", allow_zero=True)
        _positive(self.cooldown_s, "cooldown", allow_zero=True)
        _positive(self.rdma_gbps, "RDMA bandwidth")
        if self.bucket_s is not None:
            _positive(self.bucket_s, "bucket")
