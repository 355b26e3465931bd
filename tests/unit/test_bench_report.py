"""Benchmark A's report flags a direct flow some router beat: that baseline measured the
client's own queueing, so the latencies added against it are not the routers' cost."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import router_overhead


def _results(**added_p50: float) -> dict[str, Any]:
    return {name: {"added_ms": {"p50": v, "p99": abs(v) + 1}} for name, v in added_p50.items()}


def test_a_router_faster_than_its_direct_flow_flags_that_flow() -> None:
    results = _results(**{"prfaas-router": 0.4, "vllm-router": -0.2, "sglang-router": 0.1})
    assert router_overhead.saturated_baselines(results) == ["direct 2-phase"]


def test_positive_added_latencies_flag_nothing() -> None:
    results = _results(**{"prfaas-router": 0.4, "vllm-router": 0.2, "sglang-router": 0.0})
    results["direct 2-phase"] = {}  # baselines carry no added figures
    assert router_overhead.saturated_baselines(results) == []


def test_a_negative_p99_alone_flags_the_flow() -> None:
    results = {"sglang-router": {"added_ms": {"p50": 0.1, "p99": -3.0}}}
    assert router_overhead.saturated_baselines(results) == ["direct bootstrap"]
