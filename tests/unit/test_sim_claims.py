"""The simulator's headline claims on the paper's case study (the "must show" list).

About 20-40 s in all on one core: the default run, a bisection of the sustainable rate per
configuration, and the link-drop / burst comparisons. The figures and how to reproduce them are
in bench/README.md.
"""

from __future__ import annotations

import json
import time

import pytest

from prfaas.cli import main
from prfaas.model.planner import plan
from prfaas.model.scenario import case_study
from prfaas.sim import SLO, Bursts, LinkSchedule, SimOptions, simulate, sustainable_rate

PAPER_RATIO = {"prfaas": 1.54, "naive": 1.16}  # Table 6: Λ_max relative to homogeneous PD


def test_default_run_cuts_p90_ttft_by_more_than_half(capsys: pytest.CaptureFixture[str]) -> None:
    start = time.perf_counter()
    assert main(["simulate", "--no-progress", "-o", "json"]) == 0
    assert time.perf_counter() - start < 60
    doc = json.loads(capsys.readouterr().out)
    run, p = doc["run"], doc["policies"]
    # the default load is one the homogeneous baseline can just sustain
    assert run["rate_rps"] == pytest.approx(0.9 * run["planned_rps"]["homogeneous"], rel=0.03)
    assert run["requests"] == 20_000
    assert p["homogeneous"]["ttft_p90_s"] <= run["slo_ttft_s"]
    for s in p.values():
        assert s["completed"] == 20_000 and s["dropped"] == 0
    # paper: 3.51 s vs 9.73 s (−64%); asked: at least −50%
    assert p["prfaas"]["ttft_p90_s"] <= 0.5 * p["homogeneous"]["ttft_p90_s"]
    assert p["prfaas_static"]["ttft_p90_s"] <= 0.5 * p["homogeneous"]["ttft_p90_s"]
    assert p["prfaas"]["ttft_mean_s"] <= 0.5 * p["homogeneous"]["ttft_mean_s"]
    assert 10 <= p["naive"]["egress_gbps_mean"] * 3.24 / 1.9 <= 17  # ≈13 Gbps at full load


def test_sustainable_rates_follow_the_paper() -> None:
    scenario = case_study()
    result = plan(scenario)
    options = SimOptions(requests=10_000, slo=SLO(ttft_s=20.0))
    rates = {
        name: sustainable_rate(scenario, options, name, result=result)
        for name in ("homogeneous", "naive", "prfaas")
    }
    for s in rates.values():  # the simulated limit sits just under the analytical Λ_max
        assert 0.85 * s.planned_rps <= s.rate_rps <= 1.05 * s.planned_rps
    h, n, p = (rates[k].rate_rps for k in ("homogeneous", "naive", "prfaas"))
    assert p > n > h
    assert p / h == pytest.approx(PAPER_RATIO["prfaas"], rel=0.15)
    assert n / h == pytest.approx(PAPER_RATIO["naive"], rel=0.15)


def compare(**kw: object) -> tuple[dict[str, object], dict[str, object]]:
    options = SimOptions(policies=("prfaas_static", "prfaas"), drain_s=0, **kw)  # type: ignore[arg-type]
    report = simulate(case_study(), options)
    return report.results["prfaas_static"].summary, report.results["prfaas"].summary


def test_link_drop_dual_timescale_beats_static_t() -> None:
    # 100 → 10 Gbps from 10 to 40 min, at 2.9 req/s: over what static t can carry on 10 Gbps
    static, dual = compare(
        rate_rps=2.9, duration_s=3000, link=LinkSchedule.parse("600:10,2400:100")
    )
    assert static["dropped"] == dual["dropped"] == 0
    assert dual["ttft_p90_s"] <= 0.5 * static["ttft_p90_s"]  # type: ignore[operator]
    assert dual["completed"] > static["completed"]  # type: ignore[operator]
    assert dual["goodput_rps"] >= 1.2 * static["goodput_rps"]  # type: ignore[operator]
    assert dual["role_changes"] >= 2  # one decode instance became PD-P and back


def test_bursts_on_a_constrained_link_dual_timescale_beats_static_t() -> None:
    static, dual = compare(
        rate_rps=2.7,
        duration_s=3600,
        arrivals="bursty",
        bursts=Bursts(1.5, 60, 120),
        link=LinkSchedule.parse("600:10"),
    )
    assert static["dropped"] == dual["dropped"] == 0
    assert dual["ttft_p90_s"] <= 0.6 * static["ttft_p90_s"]  # type: ignore[operator]
    assert dual["completed"] > static["completed"]  # type: ignore[operator]
    assert dual["goodput_rps"] >= 1.1 * static["goodput_rps"]  # type: ignore[operator]


def test_compute_bound_bursts_dual_timescale_does_no_harm() -> None:
    # 100 Gbps: bursts saturate compute, not the link, and the planned t is already the best
    # split of the work; the fast loop must hold it rather than chase queues
    static, dual = compare(
        rate_rps=2.4, requests=8000, arrivals="bursty", bursts=Bursts(1.5, 60, 120)
    )
    assert dual["dropped"] == 0
    assert dual["ttft_p90_s"] <= 1.1 * static["ttft_p90_s"]  # type: ignore[operator]
