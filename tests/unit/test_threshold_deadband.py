"""The operator keeps the published threshold while the new optimum moves less than the
deadband (noisy signals must not churn policy versions: each resets the routers' fast loop)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from prfaas.api.pdcluster import PDClusterSpec
from prfaas.api.prefillpool import PrefillPoolSpec
from prfaas.model.planner import plan
from prfaas.model.scenario import case_study
from prfaas.slowloop.decide import routing_policy
from prfaas.slowloop.observation import Observation, PoolObservation, Signals

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"


def _spec(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((SAMPLES / name).read_text())["spec"])


@pytest.mark.parametrize(
    ("published", "optimum", "mode", "band", "expect"),
    [
        (19_400, 19_900, "Auto", 0.05, 19_400),  # 2.6 % move: kept
        (19_400, 21_000, "Auto", 0.05, 21_000),  # 8 % move: published
        (19_400, 19_900, "Auto", 0.0, 19_900),  # deadband off
        (None, 19_900, "Auto", 0.05, 19_900),  # nothing published yet
    ],
)
def test_deadband(published: int | None, optimum: int, mode: str, band: float, expect: int) -> None:
    raw = _spec("pdcluster-h20.yaml")
    raw["policy"]["threshold"] = {"mode": mode, "deadbandFraction": band}
    spec = PDClusterSpec.model_validate(raw)
    pool = PrefillPoolSpec.model_validate(_spec("prefillpool-h200.yaml"))
    best = plan(case_study()).prfaas
    signals = Signals("Declared", case_study().workload, None)
    obs = Observation("h20-pd", spec, {}, signals, PoolObservation(spec.prefill_pools[0], pool))
    old = None
    if published is not None:
        old = routing_policy(obs, dataclasses.replace(best, threshold_tokens=published), None)
    policy = routing_policy(obs, dataclasses.replace(best, threshold_tokens=optimum), old)
    assert policy.threshold_tokens == expect
    assert policy.version == (1 if expect == published else (2 if published else 1))
