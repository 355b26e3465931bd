"""The highest sustainable rate: the largest arrival rate whose P90 TTFT stays within the SLO.

Bisection over the rate with common random numbers (the same seed at every rate, so the
arrival times are the same sequence stretched and the lengths are the very same): P90 TTFT is
then almost monotone in the rate and the search converges cleanly. A run passes when nothing is
dropped and its P90 TTFT (unfinished requests counted at their elapsed time) meets the SLO.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from prfaas.model.planner import PlanResult, plan
from prfaas.model.scenario import Scenario
from prfaas.sim.arrivals import generate
from prfaas.sim.options import PolicyName, SimOptions
from prfaas.sim.run import run_setup
from prfaas.sim.setups import Tables, setups, tables


@dataclass(frozen=True)
class Sustainable:
    policy: PolicyName
    rate_rps: float  # highest rate that passed
    p90_ttft_s: float  # at that rate
    planned_rps: float  # the planner's Λ_max for the configuration
    runs: int


def _p90(
    scenario: Scenario,
    result: PlanResult,
    name: PolicyName,
    options: SimOptions,
    rate: float,
    tab: Tables,
) -> tuple[bool, float]:
    requests = generate(
        scenario.workload.input_length.grid(), scenario.workload.output_tokens, options, rate
    )
    setup = setups(result, (name,), options.routing)[0]
    s = run_setup(scenario, setup, requests, options, tab=tab).summary
    p90 = s["ttft_p90_s"]
    ok = s["dropped"] == 0 and p90 is not None and p90 <= options.slo.ttft_s
    return ok, float(p90) if p90 is not None else float("inf")


def sustainable_rate(
    scenario: Scenario,
    options: SimOptions,
    policy: PolicyName,
    iterations: int = 8,
    result: PlanResult | None = None,
) -> Sustainable:
    """Bisect in [0.3, 1.3] × the planner's Λ_max of ``policy`` (widened if needed)."""
    result = result or plan(scenario)
    if options.arrivals == "trace":
        options = replace(options, arrivals="poisson", trace=None)
    kind = policy if policy in ("homogeneous", "naive") else "prfaas"
    planned: float = getattr(result, kind).throughput_rps
    tab = tables(scenario, scenario.workload.input_length.max_tokens)
    lo, hi = 0.3 * planned, 1.3 * planned
    runs = 0
    ok, p90_lo = _p90(scenario, result, policy, options, lo, tab)
    runs += 1
    while not ok and lo > 1e-3 * planned:
        hi, lo = lo, lo / 2
        ok, p90_lo = _p90(scenario, result, policy, options, lo, tab)
        runs += 1
    if not ok:
        return Sustainable(policy, 0.0, p90_lo, planned, runs)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        ok, p90 = _p90(scenario, result, policy, options, mid, tab)
        runs += 1
        if ok:
            lo, p90_lo = mid, p90
        else:
            hi = mid
    return Sustainable(policy, lo, p90_lo, planned, runs)
