"""Prometheus results → a workload; thin or missing data → SignalsUnavailableError.

The fake Prometheus answers by the series names the router's and engines' own metric objects
expose, so the default queries must name what they export.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from prfaas.api.pdcluster import PrometheusQueries, PrometheusSource, WorkloadSource
from prfaas.controller.signals import (
    SignalsUnavailableError,
    from_prometheus,
    gather,
    histogram_from_buckets,
)
from prfaas.engine.metrics import EngineMetrics
from prfaas.model.scenario import case_study
from prfaas.router.metrics import RouterMetrics
from prfaas.slowloop.conditions import set_condition

ROUTER = RouterMetrics()
ENGINE = EngineMetrics("model", "prefill")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def series(metric: Any, suffix: str = "") -> str:
    """The name a metric object's samples are exposed under (plus ``_total``, ``_bucket``…)."""
    (family,) = metric.describe()
    return f"{family.name}{suffix}"


def exported(*registries: CollectorRegistry) -> set[str]:
    return {
        f"{f.name}{s}" for r in registries for f in r.collect() for s in SUFFIXES.get(f.type, ("",))
    }


REQUESTS = series(ROUTER.requests, "_total")
LENGTHS = series(ROUTER.uncached, "_bucket")
OUTPUT = series(ROUTER.output)  # the mean reads its _sum and _count
LINK = series(ROUTER.link_bytes, "_total")
WAITING = series(ENGINE.waiting)


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
        REQUESTS: vec({"": 3.1}, "x"),
        LENGTHS: vec(BUCKETS),
        OUTPUT: vec({"": 1024.0}, "x"),
        LINK: vec({"h200-pool": 12.5}, "pool"),
        WAITING: vec({"prefill": 3, "decode": 1}, "role"),
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
        (REQUESTS, "NoData"),
        (LENGTHS, "NoData"),
        (OUTPUT, "NoData"),
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
    responses[LENGTHS] = vec({"1024": 1, "+Inf": 10})
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
    assert "cannot connect" in str(err.value)  # the cause, never its text (trust boundary)


def test_declared_workload_needs_no_prometheus() -> None:
    declared = case_study().workload
    sig = gather(WorkloadSource(declared=declared), lambda url: pytest.fail("queried"))
    assert sig.source == "Declared" and sig.workload == declared


def test_default_queries_read_only_series_the_router_and_engines_export() -> None:
    available = exported(ROUTER.registry, ENGINE.registry)
    for field, promql in PrometheusQueries().model_dump().items():
        used = set(re.findall(r"\bprfaas_\w+|\b\w+:\w+", promql))
        assert used, f"{field}: names no metric"
        assert used <= available, f"{field}: {sorted(used - available)} not exported"


def test_condition_transition_time_moves_only_on_flip() -> None:
    conds = set_condition([], "Ready", "True", "Planned", "ok", 1, now="T1")
    conds = set_condition(conds, "Ready", "True", "Planned", "still ok", 2, now="T2")
    assert conds[0].last_transition_time == "T1" and conds[0].observed_generation == 2
    conds = set_condition(conds, "Ready", "False", "Stale", "no", 2, now="T3")
    assert conds[0].last_transition_time == "T3"
    conds = set_condition(conds, "Degraded", "False", "AllReachable", "", 2, now="T4")
    assert [c.type for c in conds] == ["Degraded", "Ready"]


def test_default_queries_select_one_pdcluster_literally() -> None:
    seen: list[str] = []

    def query(promql: str) -> list[dict[str, Any]]:
        seen.append(promql)
        return fake(healthy())(promql)

    from_prometheus(SOURCE, query, pdcluster="team-a/h20.pd")
    assert all("$pdcluster" not in q for q in seen)
    # a literal dot (the one regex character a name holds); "|": unlabelled series as before
    assert all('pdcluster=~"team-a/h20\\\\.pd|"' in q for q in seen), seen


def test_a_router_for_a_pdcluster_labels_every_series() -> None:
    from prometheus_client import generate_latest

    labelled = RouterMetrics("team-a/h20-pd")
    labelled.requests.labels("pool", "long").inc()
    labelled.uncached.observe(30_000)
    text = generate_latest(labelled.registry).decode()
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert samples and all('pdcluster="team-a/h20-pd"' in line for line in samples)
    plain = generate_latest(RouterMetrics().registry).decode()
    assert "pdcluster=" not in plain


@pytest.mark.parametrize("label", ["no-slash", "Upper/case", "a/b/c", "ns/-bad"])
def test_a_bad_metrics_pdcluster_is_a_one_line_error(
    label: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from prfaas.cli import main

    policy = tmp_path / "policy.json"
    policy.write_text('{"version": 1}', encoding="utf-8")
    code = main(["router", "--policy-file", str(policy), "--metrics-pdcluster", label])
    err = capsys.readouterr().err
    assert code == 2 and "--metrics-pdcluster" in err and "NAMESPACE/NAME" in err
    assert "Traceback" not in err
