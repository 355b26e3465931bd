"""Discrete-event simulator of a PrfaaS deployment, driving the router's own ``prfaas.routing``.

Pure (no HTTP, no Kubernetes): ``simulate(scenario, SimOptions(...))`` plans the scenario with
``prfaas.model``, generates the requests once (Poisson, bursty or a Mooncake trace) and runs each
configuration (homogeneous PD, naive heterogeneous, PrfaaS with static t, PrfaaS with the
dual-timescale policy) on them. ``sustainable_rate`` finds the highest rate within a TTFT SLO.
"""

from prfaas.sim.capacity import Sustainable, sustainable_rate
from prfaas.sim.options import (
    POLICIES,
    SLO,
    Bursts,
    LinkSchedule,
    PolicyName,
    PrefixSettings,
    SimError,
    SimOptions,
)
from prfaas.sim.run import SimReport, simulate
from prfaas.sim.stats import PolicyResult
from prfaas.sim.trace import TraceError, TraceRow, read_trace, write_trace

__all__ = [
    "POLICIES",
    "SLO",
    "Bursts",
    "LinkSchedule",
    "PolicyName",
    "PolicyResult",
    "PrefixSettings",
    "SimError",
    "SimOptions",
    "SimReport",
    "Sustainable",
    "TraceError",
    "TraceRow",
    "read_trace",
    "simulate",
    "sustainable_rate",
    "write_trace",
]
