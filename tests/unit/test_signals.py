"""Prometheus results → a workload; thin or missing data → SignalsUnavailableError."""

from __future__ import annotations

from typing import Any

import pytest

from prfaas.api.pdcluster import PrometheusSource, WorkloadSource
from prfaas.controller.signals import (
    SignalsUnavailableError,
    from_prometheus,
    gather,
    histogram_from_buckets,
)
from prfaas.model.scenario import case_study
from prfaas.slowloop.conditions import set_condition


def vec(values: dict[str, float], label: str = "le") -> list[dict[str, Any]]:
    return [{"metric": {label: k}, "value": [0, str(v)]} for k, v in values.items()]


BUCKETS = {"1024": 100.0, "8192": 300.0, "32768": 700.0, "131072": 990.0, "+Inf": 1000.0}


def fake(responses: dict[str, list[dict[str, Any]]]) -> Any:
    def query(promql: str) -> list[dict[str, Any]]:
        for key, value in responses.items():
            if key in promql:
                return value
        return []

    return query


def healthy() -> dict[str, list[dict[str, Any]]]:
    return {
        "requests_total": vec({"": 3.1}, "x"),
        "uncached_tokens_bucket": vec(BUCKETS),
        "output_tokens": vec({"": 1024.0}, "x"),
        "link_bytes_total": vec({"h200-pool": 12.5}, "pool"),
        "num_requests_waiting": vec({"prefill": 3, "decode": 1}, "role"),
    }


SOURCE = PrometheusSource(url="http://127.0.0.1:9090", window="2m")


def test_histogram_from_buckets() -> None:
    hist, total = histogram_from_buckets(vec(BUCKETS), 131072)
    assert total == 1000
    assert [b.le for b in hist.buckets] == [1024, 8192, 32768, "+Inf"]  # 131072 = max
    grid = hist.grid()
    assert grid.weights.sum() == pytest.approx(1.0)
    share_short = grid.weights[grid.lengths <= 1024].sum()
    assert share_short == pytest.approx(0.1, abs=1e-3)


def test_from_prometheus_builds_a_workload() -> None:
    sig = from_prometheus(SOURCE, fake(healthy()))
    assert sig.source == "Prometheus"
    assert sig.arrival_rate_rps == pytest.approx(3.1)
    assert sig.workload.output_tokens == 1024
    assert sig.egress_gbps == {"h200-pool": 12.5}
    assert sig.queue_depth == {"prefill": 3, "decode": 1}
    assert sig.samples == 1000


def test_window_is_substituted() -> None:
    seen: list[str] = []

    def query(promql: str) -> list[dict[str, Any]]:
        seen.append(promql)
        return fake(healthy())(promql)

    from_prometheus(SOURCE, query)
    assert all("$window" not in q for q in seen)
    assert any("[2m]" in q for q in seen)


@pytest.mark.parametrize(
    ("drop", "reason"),
    [
        ("requests_total", "NoData"),
        ("uncached_tokens_bucket", "NoData"),
        ("output_tokens", "NoData"),
    ],
)
def test_missing_series_is_no_data(drop: str, reason: str) -> None:
    responses = healthy()
    responses[drop] = []
    with pytest.raises(SignalsUnavailableError) as err:
        from_prometheus(SOURCE, fake(responses))
    assert err.value.reason == reason


def test_too_few_samples_is_stale() -> None:
    responses = healthy()
    responses["uncached_tokens_bucket"] = vec({"1024": 1, "+Inf": 10})
    with pytest.raises(SignalsUnavailableError) as err:
        from_prometheus(SOURCE, fake(responses))
    assert err.value.reason == "TooFewSamples"


def test_unreachable_prometheus_is_reported() -> None:
    def broken(url: str) -> Any:
        def query(promql: str) -> list[dict[str, Any]]:
            raise ConnectionError("connection refused")

        return query

    with pytest.raises(SignalsUnavailableError) as err:
        gather(WorkloadSource(prometheus=SOURCE), broken)
    assert err.value.reason == "PrometheusUnreachable"
    assert "connection refused" in str(err.value)


def test_declared_workload_needs_no_prometheus() -> None:
    declared = case_study().workload
    sig = gather(WorkloadSource(declared=declared), lambda url: pytest.fail("queried"))
    assert sig.source == "Declared" and sig.workload == declared


def test_condition_transition_time_moves_only_on_flip() -> None:
    conds = set_condition([], "Ready", "True", "Planned", "ok", 1, now="T1")
    conds = set_condition(conds, "Ready", "True", "Planned", "still ok", 2, now="T2")
    assert conds[0].last_transition_time == "T1" and conds[0].observed_generation == 2
    conds = set_condition(conds, "Ready", "False", "Stale", "no", 2, now="T3")
    assert conds[0].last_transition_time == "T3"
    conds = set_condition(conds, "Degraded", "False", "AllReachable", "", 2, now="T4")
    assert [c.type for c in conds] == ["Degraded", "Ready"]
