"""``simulate`` for a fleet: plan it (``prfaas.model.fleet_planner``), then run each plan (joint,
independent, homogeneous) on the very same requests through ``FleetEngine``; ``sustainable``
finds the largest multiple of every cluster's demand whose P90 TTFT meets the SLO everywhere.

Requests: per cluster, Poisson arrivals at ``scale × demand`` with lengths from its workload;
each cluster gets ``requests × demand_i / Σ demand`` of them. The gaps and lengths are drawn once
per seed (common random numbers): another scale stretches the same arrivals in time, so a
bisection over the scale converges cleanly and plans are compared on identical traffic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from prfaas.model.fleet import Fleet
from prfaas.model.fleet_planner import FleetPlan, FleetResult, plan_fleet
from prfaas.routing.config import RoutingConfig
from prfaas.routing.decide import Target
from prfaas.sim.arrivals import sample_lengths
from prfaas.sim.fleet_engine import Arrivals, Fault, FleetEngine, FleetRecord, fleet_tables
from prfaas.sim.options import SimError

FleetPlanName = Literal["joint", "independent", "homogeneous"]
FLEET_PLANS: tuple[FleetPlanName, ...] = ("joint", "independent", "homogeneous")


@dataclass(frozen=True)
class FleetSimOptions:
    scale: float = 1.0  # × every cluster's demand
    requests: int = 20_000  # over the whole fleet
    seed: int = 0
    slo_ttft_s: float = 20.0
    plans: tuple[FleetPlanName, ...] = FLEET_PLANS
    faults: tuple[Fault, ...] = ()
    routing: RoutingConfig = field(default_factory=RoutingConfig)

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise SimError(f"scale must be > 0, got {self.scale:g}")
        if self.requests < 1:
            raise SimError(f"requests must be >= 1, got {self.requests}")
        if not self.slo_ttft_s > 0:
            raise SimError(f"SLO TTFT must be > 0, got {self.slo_ttft_s:g}")
        unknown = [p for p in self.plans if p not in FLEET_PLANS]
        if unknown or not self.plans:
            raise SimError(f"plans: choose from {', '.join(FLEET_PLANS)}")


@dataclass(frozen=True)
class ClusterResult:
    name: str
    offered_rps: float
    completed: int
    dropped: int
    throughput_rps: float
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    offload_fraction: float


@dataclass(frozen=True)
class FleetRun:
    plan: FleetPlanName
    clusters: tuple[ClusterResult, ...]
    link_gbps: dict[str, float]  # "cluster/pool" → mean Gbps
    rerouted: int
    duration_s: float

    @property
    def worst_p90_s(self) -> float:
        return max((c.ttft_p90_s or 0.0) for c in self.clusters)

    @property
    def throughput_rps(self) -> float:
        return sum(c.throughput_rps for c in self.clusters)

    def meets(self, slo_s: float) -> bool:
        return all(self.meets_in(c, slo_s) for c in self.clusters)

    @staticmethod
    def meets_in(c: ClusterResult, slo_s: float) -> bool:
        return c.dropped == 0 and c.ttft_p90_s is not None and c.ttft_p90_s <= slo_s


@dataclass(frozen=True)
class FleetSimReport:
    fleet: Fleet
    result: FleetResult
    options: FleetSimOptions
    runs: dict[FleetPlanName, FleetRun]
    wall_s: float


@dataclass(frozen=True)
class _Draws:
    gaps: list[np.ndarray]  # per cluster, unit-rate exponential gaps
    tokens: list[np.ndarray]


def _draw(fleet: Fleet, requests: int, seed: int) -> _Draws:
    demand = np.array([c.demand_rps for c in fleet.clusters])
    counts = np.maximum(1, np.rint(requests * demand / demand.sum()).astype(int))
    gaps, tokens = [], []
    for i, (c, n) in enumerate(zip(fleet.clusters, counts, strict=True)):
        rng = np.random.default_rng([seed, i])
        gaps.append(rng.exponential(1.0, int(n)))
        tokens.append(sample_lengths(c.workload.input_length.grid(), int(n), rng))
    return _Draws(gaps, tokens)


def arrivals(fleet: Fleet, draws: _Draws, scale: float) -> Arrivals:
    times, who, tokens, output = [], [], [], []
    for i, c in enumerate(fleet.clusters):
        t = np.cumsum(draws.gaps[i]) / (scale * c.demand_rps)
        times.append(t - t[0])
        who.append(np.full(t.size, i))
        tokens.append(draws.tokens[i])
        output.append(np.full(t.size, max(1, round(c.workload.output_tokens))))
    order = np.argsort(np.concatenate(times), kind="stable")
    return Arrivals(
        np.concatenate(times)[order].tolist(),
        np.concatenate(who)[order].tolist(),
        np.concatenate(tokens)[order].tolist(),
        np.concatenate(output)[order].tolist(),
    )


def summarise(fleet: Fleet, name: FleetPlanName, rec: FleetRecord) -> FleetRun:
    arrival = np.asarray(rec.arrival)
    cluster = np.asarray(rec.cluster)
    first = np.asarray(rec.first_token)
    done = np.asarray(rec.done)
    target = np.asarray(rec.target)
    span = max(rec.end_time, 1e-9)
    out = []
    for i, c in enumerate(fleet.clusters):
        mine = cluster == i
        got = mine & ~np.isnan(first)
        ttft = np.sort(first[got] - arrival[got])
        served = mine & (target != int(Target.REJECT))
        last = float(arrival[mine].max()) if mine.any() else 0.0
        out.append(
            ClusterResult(
                name=c.name,
                offered_rps=float(mine.sum()) / max(last, 1e-9),
                completed=int((mine & ~np.isnan(done)).sum()),
                dropped=int((mine & (target == int(Target.REJECT))).sum()),
                throughput_rps=float((mine & ~np.isnan(done)).sum()) / span,
                ttft_p50_s=float(np.percentile(ttft, 50)) if ttft.size else None,
                ttft_p90_s=float(np.percentile(ttft, 90)) if ttft.size else None,
                offload_fraction=float((served & (target == int(Target.POOL))).sum())
                / max(int(served.sum()), 1),
            )
        )
    gbps = {f"{a}/{b}": g / span for (a, b), g in rec.link_gbit.items()}
    return FleetRun(name, tuple(out), gbps, rec.rerouted, span)


def plan_of(result: FleetResult, name: FleetPlanName) -> FleetPlan:
    plan: FleetPlan = getattr(result, name)
    return plan


def run_plan(
    fleet: Fleet,
    result: FleetResult,
    name: FleetPlanName,
    arr: Arrivals,
    options: FleetSimOptions,
) -> FleetRun:
    tab = fleet_tables(fleet, max(arr.tokens))
    engine = FleetEngine(fleet, plan_of(result, name), tab, arr, options.routing, options.faults)
    return summarise(fleet, name, engine.run())


def simulate_fleet(
    fleet: Fleet, options: FleetSimOptions, result: FleetResult | None = None
) -> FleetSimReport:
    start = time.perf_counter()
    result = result or plan_fleet(fleet)
    _check_faults(fleet, options.faults)
    arr = arrivals(fleet, _draw(fleet, options.requests, options.seed), options.scale)
    runs = {name: run_plan(fleet, result, name, arr, options) for name in options.plans}
    return FleetSimReport(fleet, result, options, runs, time.perf_counter() - start)


@dataclass(frozen=True)
class FleetSustainable:
    plan: FleetPlanName
    scale: float  # the largest multiple of every demand that met the SLO
    planned_scale: float  # the planner's: min over clusters of Λ_i / demand_i
    worst_p90_s: float
    runs: int


def sustainable(
    fleet: Fleet,
    options: FleetSimOptions,
    name: FleetPlanName,
    result: FleetResult | None = None,
    iterations: int = 7,
) -> FleetSustainable:
    """Bisect the scale in [0.3, 1.3] × the plan's own (widened down if needed)."""
    result = result or plan_fleet(fleet)
    draws = _draw(fleet, options.requests, options.seed)
    planned = plan_of(result, name).satisfaction

    def ok(scale: float) -> tuple[bool, float]:
        run = run_plan(fleet, result, name, arrivals(fleet, draws, scale), options)
        return run.meets(options.slo_ttft_s), run.worst_p90_s

    lo, hi, runs = 0.3 * planned, 1.3 * planned, 1
    good, p90_lo = ok(lo)
    while not good and lo > 1e-3 * planned:
        hi, lo = lo, lo / 2
        good, p90_lo = ok(lo)
        runs += 1
    if not good:
        return FleetSustainable(name, 0.0, planned, p90_lo, runs)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        passed, p90 = ok(mid)
        runs += 1
        if passed:
            lo, p90_lo = mid, p90
        else:
            hi = mid
    return FleetSustainable(name, lo, planned, p90_lo, runs)


def _check_faults(fleet: Fleet, faults: tuple[Fault, ...]) -> None:
    pools = {p.name for p in fleet.pools}
    links = {f"{c.name}/{link.pool}" for c in fleet.clusters for link in c.links}
    for f in faults:
        known = links if f.kind == "link" else pools
        if f.target not in known:
            raise SimError(
                f"--fail {f.kind}:{f.target}: unknown {f.kind} (choose from "
                f"{', '.join(sorted(known))})"
            )


def parse_fault(text: str) -> Fault:
    """``pool:NAME@START[-END]`` or ``link:CLUSTER/POOL@START[-END]`` (seconds)."""
    kind, sep, rest = text.partition(":")
    target, at, window = rest.partition("@")
    start, dash, end = window.partition("-")
    try:
        if kind not in ("pool", "link") or not sep or not at or not target:
            raise ValueError
        begin = float(start)
        finish = float(end) if dash else float("inf")
        if begin < 0 or finish <= begin:
            raise ValueError
    except ValueError:
        raise SimError(
            f"--fail: expected pool:NAME@START[-END] or link:CLUSTER/POOL@START[-END], got {text!r}"
        ) from None
    return Fault(kind, target, begin, finish)  # type: ignore[arg-type]


def run_json(run: FleetRun) -> dict[str, Any]:
    return {
        "throughput_rps": run.throughput_rps,
        "worst_ttft_p90_s": run.worst_p90_s,
        "rerouted": run.rerouted,
        "duration_s": run.duration_s,
        "link_gbps": run.link_gbps,
        "clusters": {
            c.name: {
                "offered_rps": c.offered_rps,
                "completed": c.completed,
                "dropped": c.dropped,
                "throughput_rps": c.throughput_rps,
                "ttft_p50_s": c.ttft_p50_s,
                "ttft_p90_s": c.ttft_p90_s,
                "offload_fraction": c.offload_fraction,
            }
            for c in run.clusters
        },
    }
