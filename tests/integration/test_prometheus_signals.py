"""Signals through a real Prometheus scraping the router's metrics, driven by the test."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from router_exporter import RouterMetricsExporter, case_study_lengths

from prfaas.api.pdcluster import PrometheusSource, WorkloadSource
from prfaas.controller.signals import SignalsUnavailableError, gather, prometheus_query_factory
from prfaas.model.planner import plan
from prfaas.model.scenario import case_study
from prfaas_dev.prometheus import LocalPrometheus

pytestmark = pytest.mark.integration


@pytest.fixture
def exporter() -> Iterator[RouterMetricsExporter]:
    exp = RouterMetricsExporter()
    yield exp
    exp.close()


@pytest.fixture
def prometheus(exporter: RouterMetricsExporter) -> Iterator[LocalPrometheus]:
    with LocalPrometheus({"router": [f"127.0.0.1:{exporter.port}"]}) as prom:
        prom.wait_scraped()  # series exist at zero before traffic, so increase() sees all of it
        yield prom


def wait_scrapes(seconds: float = 2.5) -> None:
    time.sleep(seconds)


def source(prom: LocalPrometheus, window: str = "20s") -> WorkloadSource:
    return WorkloadSource(prometheus=PrometheusSource(url=prom.url, window=window))


def test_measured_workload_plans_like_the_declared_one(
    exporter: RouterMetricsExporter, prometheus: LocalPrometheus
) -> None:
    exporter.drive(case_study_lengths(4000))
    wait_scrapes()
    signals = gather(source(prometheus), prometheus_query_factory())
    assert signals.source == "Prometheus"
    assert 3000 <= (signals.samples or 0) <= 8000  # increase() extrapolates to the window
    assert signals.workload.output_tokens == pytest.approx(1024)
    assert signals.arrival_rate_rps and signals.arrival_rate_rps > 0
    assert signals.egress_gbps.get("h200-pool", 0) > 0
    measured = case_study().model_copy(update={"workload": signals.workload})
    best = plan(measured).prfaas
    assert (best.n_prefill, best.n_decode) == (3, 5)
    assert 16_000 <= (best.threshold_tokens or 0) <= 23_000
    assert best.throughput_rps == pytest.approx(3.24, rel=0.06)


def test_changed_traffic_moves_the_plan(
    exporter: RouterMetricsExporter, prometheus: LocalPrometheus
) -> None:
    rng = np.random.default_rng(7)
    exporter.drive(rng.integers(1_000, 6_000, size=3000))  # short prompts only
    wait_scrapes()
    signals = gather(source(prometheus), prometheus_query_factory())
    short = plan(case_study().model_copy(update={"workload": signals.workload})).prfaas
    declared = plan(case_study()).prfaas
    assert short.threshold_tokens != declared.threshold_tokens
    assert short.n_decode > declared.n_decode  # short prompts: prefill is cheap, decode binds


def test_no_traffic_is_too_few_samples(prometheus: LocalPrometheus) -> None:
    wait_scrapes()
    with pytest.raises(SignalsUnavailableError) as err:
        gather(source(prometheus), prometheus_query_factory())
    assert err.value.reason in {"NoData", "TooFewSamples"}


def test_stopped_prometheus_is_unreachable(
    exporter: RouterMetricsExporter, prometheus: LocalPrometheus
) -> None:
    url = prometheus.url
    prometheus.stop()
    src = WorkloadSource(prometheus=PrometheusSource(url=url))
    with pytest.raises(SignalsUnavailableError) as err:
        gather(src, prometheus_query_factory(timeout_s=2))
    assert err.value.reason == "PrometheusUnreachable"


def test_two_pdclusters_in_one_prometheus_each_measure_their_own_traffic() -> None:
    """Two clusters' routers, labelled for their PDCluster, scraped by one Prometheus: the
    default queries of each select its own traffic, not the sum (and a dot in a name is a
    literal: "team.a" does not select "teamxa")."""
    a, b, other = (RouterMetricsExporter(p) for p in ("ns/team.a", "ns/team-b", "ns/teamxa"))
    try:
        targets = {"router": [f"127.0.0.1:{e.port}" for e in (a, b, other)]}
        with LocalPrometheus(targets) as prom:
            prom.wait_scraped()
            rng = np.random.default_rng(3)
            a.drive(case_study_lengths(3000))  # long prompts, 3× b's requests
            b.drive(rng.integers(1_000, 6_000, size=1000))  # short prompts only
            other.drive(rng.integers(1_000, 2_000, size=5000))
            wait_scrapes()
            query = prometheus_query_factory()
            sa = gather(source(prom), query, "ns/team.a")
            sb = gather(source(prom), query, "ns/team-b")
    finally:
        for e in (a, b, other):
            e.close()
    assert sa.samples is not None and sb.samples is not None
    assert 2000 <= sa.samples <= 6000 and 600 <= sb.samples <= 2000  # not 9000 each
    assert sa.arrival_rate_rps and sb.arrival_rate_rps
    # Prometheus extrapolates each target's increase by its own scrape offsets over a few
    # seconds of samples (up to ~1/3 here on a busy machine), so a's rate is not exactly 3× b's;
    # but rate and sample count of one target share those samples: their ratios agree.
    rate_ratio = sa.arrival_rate_rps / sb.arrival_rate_rps
    assert rate_ratio == pytest.approx(sa.samples / sb.samples, rel=0.05)
    assert 2.0 <= rate_ratio <= 4.5  # each its own traffic: the sum would give 1
    mean_a = sa.workload.input_length.grid().mean()
    mean_b = sb.workload.input_length.grid().mean()
    assert mean_a > 15_000 and mean_b < 6_000
    plan_a = plan(case_study().model_copy(update={"workload": sa.workload})).prfaas
    plan_b = plan(case_study().model_copy(update={"workload": sb.workload})).prfaas
    assert plan_a.threshold_tokens != plan_b.threshold_tokens
