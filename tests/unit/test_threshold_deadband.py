"""The operator keeps the published threshold while the new optimum moves less than the deadband,
and publishes a move beyond it only once it has lasted ``dwellSeconds`` (noisy signals must not
churn policy versions: each resets the routers' fast loop).

The noise test replays the demo's live phase (``data/demo_noise.json``, recorded by
``data/record_demo_noise.py``: the case study's traffic as the operator measures it there, ~480
requests per 20 s Prometheus window, a pass every 3 s; here in the case study's units) through
``decide``: fifteen minutes of steady traffic, then prompts ~1.5x longer.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from prfaas.api.pdcluster import PDClusterSpec, PDClusterStatus, PendingThresholdStatus
from prfaas.api.prefillpool import PrefillPoolSpec
from prfaas.controller.signals import histogram_from_buckets
from prfaas.model.planner import plan
from prfaas.model.scenario import case_study
from prfaas.model.workload import LengthDistribution, Workload
from prfaas.slowloop.decide import Decision, decide, routing_policy
from prfaas.slowloop.observation import (
    DECODE,
    POOL,
    PREFILL,
    GroupObservation,
    Observation,
    PoolObservation,
    Signals,
)
from prfaas.slowloop.threshold import dwell_seconds, hold

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
NOISE = Path(__file__).resolve().parent / "data" / "demo_noise.json"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _spec(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((SAMPLES / name).read_text())["spec"])


def pd_spec(**threshold: Any) -> PDClusterSpec:
    raw = _spec("pdcluster-h20.yaml")
    raw["policy"]["threshold"] = {"mode": "Auto", **threshold}
    return PDClusterSpec.model_validate(raw)


@pytest.mark.parametrize(
    ("published", "optimum", "mode", "band", "expect"),
    [
        (19_400, 19_900, "Auto", 0.05, 19_400),  # 2.6 % move: kept
        (19_400, 21_000, "Auto", 0.05, 21_000),  # 8 % move: published (declared: no dwell)
        (19_400, 19_900, "Auto", 0.0, 19_900),  # deadband off
        (None, 19_900, "Auto", 0.05, 19_900),  # nothing published yet
    ],
)
def test_deadband(published: int | None, optimum: int, mode: str, band: float, expect: int) -> None:
    spec = pd_spec(mode=mode, deadbandFraction=band)
    pool = PrefillPoolSpec.model_validate(_spec("prefillpool-h200.yaml"))
    best = plan(case_study()).prfaas
    signals = Signals("Declared", case_study().workload, None)
    obs = Observation("h20-pd", spec, {}, signals, PoolObservation(spec.prefill_pools[0], pool))
    old = None
    if published is not None:
        old, _ = routing_policy(
            obs, dataclasses.replace(best, threshold_tokens=published), None, T0
        )
    policy, pending = routing_policy(
        obs, dataclasses.replace(best, threshold_tokens=optimum), old, T0
    )
    assert policy.threshold_tokens == expect and pending is None
    assert policy.version == (1 if expect == published else (2 if published else 1))


def test_dwell_defaults_to_the_measurement_window() -> None:
    assert dwell_seconds(pd_spec()) == 0  # declared workload: no sampling noise
    raw = _spec("pdcluster-h20.yaml")
    raw["workload"] = {"prometheus": {"url": "http://prometheus:9090", "window": "5m"}}
    assert dwell_seconds(PDClusterSpec.model_validate(raw)) == 300
    raw["policy"]["threshold"] = {"dwellSeconds": 45}
    assert dwell_seconds(PDClusterSpec.model_validate(raw)) == 45


def test_a_move_is_published_once_it_has_lasted_the_dwell_on_one_side() -> None:
    spec = pd_spec(dwellSeconds=60)

    def at(s: float) -> datetime:
        return T0 + timedelta(seconds=s)

    t, p = hold(spec, 19_400, 21_000, None, at(0))  # beyond the band: remembered, not published
    assert t == 19_400 and p == PendingThresholdStatus(tokens=21_000, since="2026-11-30T12:00:00Z")
    t, p = hold(spec, 19_400, 21_500, p, at(30))
    assert t == 19_400 and p is not None and p.since == "2026-11-30T12:00:00Z"
    t, p = hold(spec, 19_400, 21_200, p, at(60))  # lasted 60 s: the latest optimum
    assert (t, p) == (21_200, None)
    # back inside the band: the excursion is forgotten
    _, p = hold(spec, 19_400, 21_000, None, at(0))
    t, p = hold(spec, 19_400, 19_800, p, at(30))
    assert (t, p) == (19_400, None)
    # the other side starts afresh
    _, p = hold(spec, 19_400, 21_000, None, at(0))
    t, p = hold(spec, 19_400, 17_000, p, at(50))
    assert t == 19_400 and p is not None and p.since == "2026-11-30T12:00:50Z"
    t, p = hold(spec, 19_400, 17_000, p, at(70))
    assert t == 19_400 and p is not None  # 20 s on this side, not 70
    # Fixed mode and "no offload" are not held
    assert hold(pd_spec(mode="Fixed", tokens=5_000), 19_400, 21_000, p, at(0)) == (21_000, None)
    assert hold(spec, 19_400, None, p, at(0)) == (None, None)


def replay(dwell: int | None) -> list[tuple[int, int | None, int]]:
    """The recorded passes through ``decide``: (pass, published t, policy version) each."""
    doc = json.loads(NOISE.read_text())
    raw = _spec("pdcluster-h20.yaml")
    raw["policy"]["mode"] = "Observe"
    window = 200  # the demo's 20 s window, in the case study's units (x10)
    raw["workload"] = {"prometheus": {"url": "http://prometheus:9090", "window": f"{window}s"}}
    raw["policy"]["threshold"] = {} if dwell is None else {"dwellSeconds": dwell}
    spec = PDClusterSpec.model_validate(raw)
    pool = PrefillPoolSpec.model_validate(_spec("prefillpool-h200.yaml"))
    groups = {PREFILL: GroupObservation(3), DECODE: GroupObservation(5), POOL: GroupObservation(4)}
    link = PoolObservation(spec.prefill_pools[0], pool)
    status, out = PDClusterStatus(), []
    for k, p in enumerate(doc["passes"]):
        samples = [{"metric": {"le": str(le)}, "value": [0, str(c)]} for le, c in p["buckets"]]
        hist, n = histogram_from_buckets(samples, 131_072)
        length = LengthDistribution(histogram=hist)
        workload = Workload(input_length=length, output_tokens=1024, arrival_rate_rps=p["rate"])
        signals = Signals("Prometheus", workload, p["rate"], samples=n)
        obs = Observation("h20-pd", spec, groups, signals, link)
        d = decide(obs, status, T0 + timedelta(seconds=p["t"]), 1)
        assert isinstance(d, Decision)
        status = d.outcome().status
        assert status.routing_policy is not None
        out.append((k, status.routing_policy.threshold_tokens, status.routing_policy.version))
    return out


def test_the_demos_noise_does_not_churn_versions_and_a_real_shift_is_published() -> None:
    doc = json.loads(NOISE.read_text())
    shift, pass_s = doc["shiftAtPass"], doc["passS"]
    runs = replay(None)  # the default: dwell one Prometheus window (200 s here)
    steady = [v for k, _, v in runs if k < shift]
    # steady traffic, fifteen minutes: at most one move after the first policy, never back
    assert steady[-1] - steady[0] <= 1, runs[:shift]
    # the shift (prompts ~1.5x longer: t ~27K) is published within two windows of it
    moved = [(k, t) for k, t, v in runs if k >= shift and v > steady[-1]]
    assert moved and (moved[0][0] - shift) * pass_s <= 2 * 200, runs[shift:]
    assert moved[0][1] is not None and 25_000 <= moved[0][1] <= 30_000
    after = [v for k, _, v in runs if k >= shift]
    assert after[-1] - steady[-1] <= 3  # and not much churn there either
    # the deadband alone (dwell 0) on the same signals: a new version every few passes
    churn = replay(0)
    assert [v for k, _, v in churn if k < shift][-1] >= 4
