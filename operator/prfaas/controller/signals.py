"""Signals for the slow loop: a declared workload, or one measured through Prometheus.

The conversion from PromQL results is pure (it takes a ``query`` callable), so it is unit-tested
on plain data and integration-tested against a real Prometheus.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import ValidationError

from prfaas.api.pdcluster import PrometheusSource, WorkloadSource
from prfaas.model.workload import (
    HistogramBucket,
    HistogramLengths,
    LengthDistribution,
    Workload,
)
from prfaas.slowloop.observation import Signals

Query = Callable[[str], list[dict[str, Any]]]


class SignalsUnavailableError(Exception):
    """Signals are missing or stale: hold the last good plan. ``reason`` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _value(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


def _scalar(query: Query, promql: str, what: str) -> float:
    result = query(promql)
    values = [v for v in map(_value, result) if math.isfinite(v)]
    if not values:
        raise SignalsUnavailableError("NoData", f"{what}: the query returned no data")
    return sum(values)


def _by_label(query: Query, promql: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for sample in query(promql):
        value = _value(sample)
        if math.isfinite(value):
            out[str(sample.get("metric", {}).get(label, ""))] = value
    return out


def histogram_from_buckets(
    samples: list[dict[str, Any]], max_tokens: int
) -> tuple[HistogramLengths, float]:
    """Cumulative ``le`` buckets (``sum by (le) (increase(..._bucket[w]))``) → a distribution."""
    edges: dict[float, float] = {}
    for sample in samples:
        label = str(sample.get("metric", {}).get("le", ""))
        value = _value(sample)
        if not label or not math.isfinite(value):
            continue
        edges[math.inf if label == "+Inf" else float(label)] = max(value, 0.0)
    if not edges:
        raise SignalsUnavailableError("NoData", "uncached length histogram: no buckets")
    total = edges.get(math.inf, max(edges.values()))
    buckets: list[HistogramBucket] = []
    running = 0.0
    for le in sorted(edges):
        if le != math.inf and (le >= max_tokens or le < 1):
            continue
        running = max(running, edges[le])  # counters read at slightly different times
        bucket_le: int | Literal["+Inf"] = "+Inf" if le == math.inf else int(le)
        if buckets and bucket_le != "+Inf" and buckets[-1].le == bucket_le:
            continue
        buckets.append(HistogramBucket(le=bucket_le, count=running))
    if not buckets or buckets[-1].le != "+Inf":
        buckets.append(HistogramBucket(le="+Inf", count=max(running, total)))
    try:
        hist = HistogramLengths(min=1, max=max_tokens, buckets=buckets)
    except ValidationError as exc:
        message = f"uncached length histogram: {exc.errors()[0]['msg']}"
        raise SignalsUnavailableError("NoData", message) from None
    return hist, buckets[-1].count


def regex_literal(value: str) -> str:
    """``value`` matched literally by a PromQL regex inside a double-quoted string (names hold
    only ``[a-z0-9.-/]``: the dot is the one regex character)."""
    return value.replace(".", "\\\\.")


def from_prometheus(source: PrometheusSource, query: Query, pdcluster: str = "") -> Signals:
    """Measure the workload; raise ``SignalsUnavailableError`` when it is too thin to plan on.
    ``pdcluster`` (``<namespace>/<name>``) replaces ``$pdcluster`` in the queries."""
    q = source.queries
    scope = regex_literal(pdcluster)

    def promql(text: str) -> str:
        return text.replace("$window", source.window).replace("$pdcluster", scope)

    rate = _scalar(query, promql(q.arrival_rate), "arrival rate")
    hist, samples = histogram_from_buckets(
        query(promql(q.uncached_length_buckets)), source.max_length_tokens
    )
    if samples < source.min_requests:
        raise SignalsUnavailableError(
            "TooFewSamples",
            f"{samples:.0f} requests in the last {source.window}; planning needs "
            f"{source.min_requests:.0f} (prometheus.minRequests)",
        )
    output = _scalar(query, promql(q.output_tokens_mean), "mean output length")
    if output <= 0:
        raise SignalsUnavailableError("NoData", "mean output length is not positive")
    return Signals(
        source="Prometheus",
        workload=Workload(
            input_length=LengthDistribution(histogram=hist),
            output_tokens=output,
            arrival_rate_rps=max(rate, 0.0),
        ),
        arrival_rate_rps=max(rate, 0.0),
        egress_gbps=_by_label(query, promql(q.egress_gbps), "pool"),
        queue_depth=_by_label(query, promql(q.queue_depth), "role"),
        samples=samples,
    )


def gather(
    source: WorkloadSource, query_factory: Callable[[str], Query], pdcluster: str = ""
) -> Signals:
    if source.declared is not None:
        return Signals("Declared", source.declared, source.declared.arrival_rate_rps)
    assert source.prometheus is not None  # WorkloadSource guarantees exactly one
    try:
        return from_prometheus(source.prometheus, query_factory(source.prometheus.url), pdcluster)
    except SignalsUnavailableError:
        raise
    except Exception as exc:  # any transport or server error means: no fresh signals
        raise SignalsUnavailableError(
            "PrometheusUnreachable", f"{source.prometheus.url}: {describe_failure(exc)}"
        ) from None


def describe_failure(exc: Exception) -> str:
    """The failure without what the server sent: the URL comes from a CR, and its answer must
    not reach status (only an HTTP status code does)."""
    found = re.search(r"HTTP Status Code (\d{3})", str(exc))
    if found:
        return f"HTTP {found.group(1)}"
    name = type(exc).__name__
    if "Timeout" in name or isinstance(exc, TimeoutError):
        return f"timed out ({name})"
    if "Connection" in name or isinstance(exc, OSError):
        return f"cannot connect ({name})"
    return name


def prometheus_query_factory(timeout_s: float = 5.0) -> Callable[[str], Query]:
    """``url → query`` with prometheus-api-client (imported lazily: not needed for declared)."""
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    def factory(url: str) -> Query:
        # no retries here: the next slow-loop pass is the retry, and stale must show fast
        client = PrometheusConnect(
            url=url, disable_ssl=True, timeout=timeout_s, retry=Retry(total=0)
        )

        def query(promql: str) -> list[dict[str, Any]]:
            result: list[dict[str, Any]] = client.custom_query(promql)
            return result

        return query

    return factory
