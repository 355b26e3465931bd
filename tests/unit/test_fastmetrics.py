"""The router's lock-free counters and histograms expose exactly what prometheus_client's
would for the same updates (names, labels, cumulative buckets with "le" bounds, sums)."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PCounter
from prometheus_client import Histogram as PHistogram

from prfaas.router import fastmetrics

BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)
VALUES = (0.0, 0.001, 0.0011, 0.01, 0.5, 1.0, 9.99, 10.0, 10.01, 1e9)


def text(registry: CollectorRegistry) -> str:
    lines = generate_latest(registry).decode().splitlines()
    return "\n".join(x for x in lines if "_created" not in x)


def test_histograms_expose_what_prometheus_client_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    a = fastmetrics.Histogram("x_seconds", "doc", buckets=BUCKETS, registry=ours)
    b = PHistogram("x_seconds", "doc", buckets=BUCKETS, registry=theirs)
    la = fastmetrics.Histogram("y_seconds", "doc", ["phase"], BUCKETS, registry=ours)
    lb = PHistogram("y_seconds", "doc", ["phase"], buckets=BUCKETS, registry=theirs)
    for v in VALUES:
        a.observe(v)
        b.observe(v)
        la.labels("prefill").observe(v * 2)
        lb.labels("prefill").observe(v * 2)
    la.labels("decode").observe(0.02)
    lb.labels("decode").observe(0.02)
    assert text(ours) == text(theirs)
    assert 'y_seconds_bucket{le="+Inf",phase="decode"} 1.0' in text(ours)


def test_counters_expose_what_prometheus_client_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    a = fastmetrics.Counter("reqs", "doc", ["target", "reason"], registry=ours)
    b = PCounter("reqs", "doc", ["target", "reason"], registry=theirs)
    c = fastmetrics.Counter("plain", "doc", registry=ours)
    d = PCounter("plain", "doc", registry=theirs)
    for target in ("pool", "local", "pool"):
        a.labels(target, "long").inc()
        b.labels(target, "long").inc()
    a.labels("local", "short").inc(2.5)
    b.labels("local", "short").inc(2.5)
    c.inc()
    d.inc()
    assert text(ours) == text(theirs)
    assert 'reqs_total{reason="long",target="pool"} 2.0' in text(ours)


def test_misuse_is_refused() -> None:
    h = fastmetrics.Histogram("h", "doc", ["a"], BUCKETS)
    c = fastmetrics.Counter("c", "doc")
    with pytest.raises(ValueError, match="through labels"):
        h.observe(1.0)
    with pytest.raises(ValueError, match="expected labels"):
        h.labels("x", "y")
    with pytest.raises(ValueError, match="only goes up"):
        c.inc(-1)
    assert math.isinf(h.bounds[-1])
