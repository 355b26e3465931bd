"""Workload: the uncached input-length distribution, output length and arrival rate.

Every distribution is turned into a *length grid* (lengths and probability weights, one point
per token up to 2¹⁸ points) so one vectorised code path serves closed forms and histograms.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Annotated, Literal, Self

import numpy as np
from pydantic import Field, model_validator

from prfaas.model.base import Spec, rule
from prfaas.model.curves import FloatArray
from prfaas.model.profiles import Tokens

MAX_GRID_POINTS = 1 << 18
# Bucket edges (tokens) of the router's uncached-length histogram, which the operator plans
# from: finer where thresholds usually fall (8K-48K) than a plain power-of-two ladder.
LENGTH_BUCKETS = (
    128,
    256,
    512,
    1024,
    2048,
    4096,
    6144,
    8192,
    10240,
    12288,
    14336,
    16384,
    18432,
    20480,
    22528,
    24576,
    28672,
    32768,
    40960,
    49152,
    65536,
    98304,
    131072,
)


@dataclass(frozen=True)
class LengthGrid:
    """A discrete length distribution: ascending ``lengths`` with ``weights`` summing to 1."""

    lengths: FloatArray
    weights: FloatArray

    @property
    def min(self) -> float:
        return float(self.lengths[0])

    @property
    def max(self) -> float:
        return float(self.lengths[-1])

    def mean(self) -> float:
        return float(self.lengths @ self.weights)


def _min_below_max(s: LogNormalLengths | HistogramLengths) -> str:
    return f"min ({s.min}) must be below max ({s.max})"


def _grid(lo: int, hi: int) -> FloatArray:
    step = max(1, math.ceil((hi - lo + 1) / MAX_GRID_POINTS))
    return np.arange(lo, hi + 1, step, dtype=np.float64)


class LogNormalLengths(Spec):
    """ln L ~ Normal(mu, sigma), truncated to [min, max] tokens (the paper's workload)."""

    mu: Annotated[float, Field(gt=0, le=20)]
    sigma: Annotated[float, Field(gt=0, le=10)]
    min: Tokens = 1
    max: Tokens

    @rule("self.min < self.max", "min must be below max", detail=_min_below_max)
    def _range(self) -> bool:
        return self.min < self.max

    def grid(self) -> LengthGrid:
        lengths = _grid(self.min, self.max)
        z = (np.log(lengths) - self.mu) / self.sigma
        density = np.exp(-0.5 * z * z) / lengths
        total = float(density.sum())
        if not math.isfinite(total) or total <= 0:
            raise ValueError("lognormal: no probability mass inside [min, max]")
        return LengthGrid(lengths, density / total)


class HistogramBucket(Spec):
    """A Prometheus histogram bucket: ``count`` observations ≤ ``le`` (cumulative)."""

    le: Annotated[int, Field(gt=0)] | Literal["+Inf"]
    count: Annotated[float, Field(ge=0)]


class HistogramLengths(Spec):
    """An empirical distribution from cumulative histogram buckets (as Prometheus exposes them).

    Mass is spread uniformly inside each bucket, like ``histogram_quantile``; the ``+Inf``
    bucket ends at ``max``.
    """

    min: Tokens = 1
    max: Tokens
    buckets: list[HistogramBucket] = Field(min_length=1, max_length=256)

    @rule("self.min < self.max", "min must be below max", detail=_min_below_max)
    def _range(self) -> bool:
        return self.min < self.max

    @model_validator(mode="after")
    def _buckets(self) -> Self:
        edges = [self._edge(b) for b in self.buckets]
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError("buckets: 'le' must be strictly increasing")
        counts = [b.count for b in self.buckets]
        if any(b < a for a, b in itertools.pairwise(counts)):
            raise ValueError("buckets: cumulative counts must not decrease")
        if edges[0] < self.min:
            raise ValueError(f"buckets: first 'le' ({edges[0]:g}) is below min ({self.min})")
        if edges[-1] > self.max:
            raise ValueError(f"buckets: an 'le' ({edges[-1]:g}) exceeds max ({self.max})")
        if counts[-1] <= 0:
            raise ValueError("buckets: the distribution is empty (all counts are zero)")
        return self

    def _edge(self, bucket: HistogramBucket) -> float:
        return float(self.max) if bucket.le == "+Inf" else float(bucket.le)

    def grid(self) -> LengthGrid:
        lengths = _grid(self.min, self.max)
        weights = np.zeros_like(lengths)
        lower, below = float(self.min) - 1, 0.0
        for bucket in self.buckets:
            upper = self._edge(bucket)
            inside = (lengths > lower) & (lengths <= upper)
            mass = bucket.count - below
            if mass > 0:
                n = int(inside.sum())
                if n == 0:  # a bucket narrower than the grid step: give it to the nearest point
                    inside = (
                        lengths
                        == lengths[np.searchsorted(lengths, upper).clip(0, len(lengths) - 1)]
                    )
                    n = 1
                weights[inside] += mass / n
            lower, below = upper, bucket.count
        return LengthGrid(lengths, weights / weights.sum())


class LengthDistribution(Spec):
    """Exactly one of ``lognormal`` or ``histogram``."""

    lognormal: LogNormalLengths | None = None
    histogram: HistogramLengths | None = None

    @rule(
        "has(self.lognormal) != has(self.histogram)",
        "give exactly one of lognormal or histogram",
        detail=lambda _: "give exactly one of 'lognormal' or 'histogram'",
    )
    def _exactly_one(self) -> bool:
        return (self.lognormal is None) != (self.histogram is None)

    def grid(self) -> LengthGrid:
        if self.lognormal is not None:
            return self.lognormal.grid()
        assert self.histogram is not None
        return self.histogram.grid()

    @property
    def max_tokens(self) -> int:
        source = self.lognormal or self.histogram
        assert source is not None
        return source.max


class Workload(Spec):
    input_length: LengthDistribution
    output_tokens: Annotated[float, Field(gt=0, le=16_777_216)]
    arrival_rate_rps: Annotated[float, Field(ge=0)] | None = None
