"""The four configurations compared, exactly as the planner proposes them, and the per-length
lookup tables the engine reads prefill times and KV sizes from."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from prfaas.model.planner import Plan, PlanError, PlanResult
from prfaas.model.scenario import Scenario
from prfaas.model.units import mib_to_gbit
from prfaas.routing.config import RoutingConfig
from prfaas.sim.options import PolicyName


@dataclass(frozen=True)
class Setup:
    """One configuration: instance counts, the slow loop's threshold and how routing adapts.

    ``homogeneous``: all local instances, the planner's best split, no pool.
    ``naive``: every prefill on the pool (threshold 0), every local instance decodes.
    ``prfaas_static``: the planner's t and split, the paper's static rule (scarce mode, fixed t).
    ``prfaas``: the same plan with the dual-timescale policy: the short-timescale loop
    (``prfaas.routing.adapt``) and the operator's slow loop (``sim.slowloop``), which re-plans
    when the link capacity changes.
    """

    name: PolicyName
    plan: Plan
    n_pool: int
    n_prefill: int
    n_decode: int
    threshold: int | None
    routing: RoutingConfig
    replan: bool


def setups(
    result: PlanResult, names: tuple[PolicyName, ...], routing: RoutingConfig
) -> list[Setup]:
    h, n, p = result.homogeneous, result.naive, result.prfaas
    static = RoutingConfig.static()
    table = {
        "homogeneous": Setup("homogeneous", h, 0, h.n_prefill, h.n_decode, None, static, False),
        "naive": Setup("naive", n, n.n_prfaas, 0, n.n_decode, 0, static, False),
        "prfaas_static": Setup(
            "prfaas_static",
            p,
            p.n_prfaas,
            p.n_prefill,
            p.n_decode,
            p.threshold_tokens,
            static,
            False,
        ),
        "prfaas": Setup(
            "prfaas", p, p.n_prfaas, p.n_prefill, p.n_decode, p.threshold_tokens, routing, True
        ),
    }
    return [table[name] for name in names]


@dataclass(frozen=True)
class Tables:
    """Per-token lookups (index = uncached tokens): Python lists, the fastest scalar access."""

    pool_seconds: list[float]
    local_seconds: list[float]
    kv_mib: list[float]
    kv_fixed_mib: float  # KV of a zero-length prompt: the linear/SWA state, length-independent

    def kv_gbit(self, tokens: int) -> float:
        return mib_to_gbit(self.kv_mib[tokens])


def tables(scenario: Scenario, max_tokens: int) -> Tables:
    top = max(max_tokens, scenario.workload.input_length.max_tokens)
    x = np.arange(0, top + 1, dtype=np.float64)
    x[0] = 1.0  # a prefill always computes at least one token
    pool = scenario.prefill_pool.instance.prefill.curve(top)(x)
    local = scenario.pd_cluster.instance.prefill.curve(top)(x)
    kv_curve = scenario.model.kv_cache.curve(top)
    kv = kv_curve(x)
    fixed = float(kv_curve(np.array([0.0]))[0])
    if not (np.all(np.isfinite(pool)) and np.all(np.isfinite(local)) and math.isfinite(fixed)):
        raise PlanError("profiles give non-finite prefill times or KV sizes")
    return Tables(pool.tolist(), local.tolist(), kv.tolist(), max(0.0, fixed))
