"""``simulate``: plan the scenario, generate the requests once, run every configuration on them."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from prfaas.model.planner import PlanResult, plan
from prfaas.model.scenario import Scenario
from prfaas.model.workload import LENGTH_BUCKETS
from prfaas.routing.prefix import PrefixIndex
from prfaas.sim.arrivals import Requests, generate
from prfaas.sim.engine import Engine
from prfaas.sim.options import (
    DEFAULT_LOAD,
    DEFAULT_REQUESTS,
    PolicyName,
    PrefixSettings,
    SimOptions,
)
from prfaas.sim.setups import Setup, Tables, setups, tables
from prfaas.sim.stats import PolicyResult, summarise
from prfaas.sim.trace import TraceRow, read_trace

Progress = Callable[[str, int, int], None]  # policy, requests arrived, requests in the run


@dataclass(frozen=True)
class SimReport:
    scenario: Scenario
    options: SimOptions
    plan: PlanResult
    rate_rps: float  # mean arrival rate of the generated requests
    requests: int
    results: dict[PolicyName, PolicyResult]
    wall_s: float


def uncached_lengths(rows: list[TraceRow], prefix: PrefixSettings) -> list[int]:
    """Prompt lengths after prefix matching against everything seen before (one shared index):
    the incremental-length distribution the slow loop plans from (paper §3.4.3)."""
    if not prefix.use_hash_ids or any(r.hash_ids is None for r in rows):
        return [r.input_length for r in rows]
    index = PrefixIndex(
        prefix.capacity_blocks, snapshot_interval_blocks=prefix.snapshot_interval_blocks
    )
    out = []
    for r in rows:
        assert r.hash_ids is not None
        out.append(r.input_length - index.match(r.hash_ids, r.input_length).tokens)
        index.insert(r.hash_ids, r.input_length)
    return out


def trace_scenario(scenario: Scenario, options: SimOptions) -> Scenario:
    """A trace brings its own workload: plan from its uncached-length histogram (the router's
    buckets, as the operator would see it) and mean output length."""
    assert options.trace is not None
    rows = read_trace(options.trace)
    if options.requests is not None:
        rows = rows[: options.requests]
    lengths = np.array(uncached_lengths(rows, options.prefix))
    top = int(max(lengths.max(), 2))
    edges = [b for b in LENGTH_BUCKETS if b < top] + [top]
    counts = np.searchsorted(np.sort(lengths), edges, side="right")
    data = scenario.model_dump(mode="json", exclude_none=True)
    data["workload"]["inputLength"] = {
        "histogram": {
            "min": 1,
            "max": top,
            "buckets": [{"le": e, "count": int(c)} for e, c in zip(edges, counts, strict=True)],
        }
    }
    data["workload"]["outputTokens"] = float(np.mean([r.output_length for r in rows]))
    return Scenario.model_validate(data)


def default_rate(result: PlanResult) -> float:
    return DEFAULT_LOAD * result.homogeneous.throughput_rps


def bucket_for(span: float, options: SimOptions) -> float:
    if options.bucket_s is not None:
        return options.bucket_s
    raw = max(span / 200, 1.0)
    nice = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600]
    return float(next((b for b in nice if b >= raw), math.ceil(raw / 3600) * 3600))


def prepare(scenario: Scenario, options: SimOptions) -> tuple[Scenario, PlanResult, Requests]:
    if options.trace is not None:
        scenario = trace_scenario(scenario, options)
    result = plan(scenario)
    rate = options.rate_rps
    if rate is None and (options.trace is None or options.arrivals != "trace"):
        rate = default_rate(result)
    if options.requests is None and options.duration_s is None and options.trace is None:
        options = replace(options, requests=DEFAULT_REQUESTS)
    requests = generate(
        scenario.workload.input_length.grid(),
        scenario.workload.output_tokens,
        options,
        rate,
        untimed_rate=default_rate(result),
    )
    return scenario, result, requests


def run_setup(
    scenario: Scenario,
    setup: Setup,
    requests: Requests,
    options: SimOptions,
    progress: Progress | None = None,
    tab: Tables | None = None,
) -> PolicyResult:
    tab = tab or tables(scenario, int(requests.tokens.max()))
    span = float(requests.arrival[-1]) if len(requests) else 0.0
    engine = Engine(scenario, setup, requests, options, tab, bucket_for(span, options))
    n = len(requests)
    record = engine.run(None if progress is None else lambda k: progress(setup.name, k, n))
    decode = scenario.pd_cluster.instance.decode
    assert decode is not None
    return summarise(record, options.slo, decode.step_seconds)


def simulate(
    scenario: Scenario, options: SimOptions, progress: Progress | None = None
) -> SimReport:
    start = time.perf_counter()
    scenario, result, requests = prepare(scenario, options)
    results: dict[PolicyName, PolicyResult] = {}
    tab = tables(scenario, int(requests.tokens.max()))
    for setup in setups(result, options.policies, options.routing):
        results[setup.name] = run_setup(scenario, setup, requests, options, progress, tab)
    span = float(requests.arrival[-1]) if len(requests) > 1 else 0.0
    rate = (len(requests) - 1) / span if span > 0 else 0.0
    return SimReport(
        scenario, options, result, rate, len(requests), results, time.perf_counter() - start
    )
