"""The requests of a run: arrival times, prompt and output lengths, prefix information.

Generated once per run and shared by every policy (common random numbers: the policies see the
very same requests, so differences between them are not sampling noise).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from prfaas.model.workload import LengthGrid
from prfaas.routing.prefix import BLOCK_TOKENS
from prfaas.sim.options import DEFAULT_REQUESTS, PrefixSettings, SimError, SimOptions
from prfaas.sim.trace import TraceError, TraceRow, read_trace

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Requests:
    arrival: FloatArray  # seconds, non-decreasing
    tokens: IntArray  # prompt length
    output: IntArray  # tokens to generate
    hashes: list[tuple[int, ...]] | None = None  # Mooncake hash_ids, when the trace has them
    cached_pd: IntArray | None = None  # hit-rate mode: cached prefix in the local PD cluster
    cached_pool: IntArray | None = None  # hit-rate mode: cached prefix in the PrefillPool

    def __len__(self) -> int:
        return int(self.arrival.size)

    def rows(self) -> Iterator[TraceRow]:
        """As Mooncake trace rows (to replay the same load against the real router)."""
        for i in range(len(self)):
            yield TraceRow(
                float(self.arrival[i] * 1000),
                int(self.tokens[i]),
                int(self.output[i]),
                self.hashes[i] if self.hashes is not None else None,
            )


def sample_lengths(grid: LengthGrid, n: int, rng: np.random.Generator) -> IntArray:
    cdf = np.cumsum(grid.weights)
    idx = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    lengths = grid.lengths[np.minimum(idx, grid.lengths.size - 1)]
    out: IntArray = np.maximum(np.rint(lengths), 1).astype(np.int64)
    return out


def _count(options: SimOptions, rate: float) -> int:
    if options.requests is not None:
        return options.requests
    if options.duration_s is not None:
        return -1  # decided by the duration
    return DEFAULT_REQUESTS


def poisson_times(
    rate: float, n: int, duration: float | None, rng: np.random.Generator
) -> FloatArray:
    if n > 0:
        return np.cumsum(rng.exponential(1.0 / rate, n))
    assert duration is not None
    times = np.cumsum(rng.exponential(1.0 / rate, int(rate * duration * 1.2 + 100)))
    while times[-1] < duration:
        more = np.cumsum(rng.exponential(1.0 / rate, int(rate * duration * 0.2 + 100)))
        times = np.concatenate([times, times[-1] + more])
    return times[times < duration]


def bursty_times(rate: float, options: SimOptions, n: int, rng: np.random.Generator) -> FloatArray:
    b = options.bursts
    on_rate, off_rate = b.rates(rate)
    on = rng.random() < b.on_s / (b.on_s + b.off_s)  # start in the stationary distribution
    start, chunks, total = 0.0, [], 0
    horizon = options.duration_s if n < 0 and options.duration_s is not None else math.inf
    while total < n if n > 0 else start < horizon:
        length = rng.exponential(b.on_s if on else b.off_s)
        r = on_rate if on else off_rate
        k = rng.poisson(r * length) if r > 0 else 0
        if k:
            chunks.append(np.sort(start + rng.random(k) * length))
            total += k
        start += length
        on = not on
    times = np.concatenate(chunks) if chunks else np.zeros(0)
    if n > 0:
        return times[:n]
    return times[times < horizon]


def hit_rate_prefixes(
    tokens: IntArray, prefix: PrefixSettings, rng: np.random.Generator
) -> tuple[IntArray | None, IntArray | None]:
    if prefix.hit_rate_pd <= 0 and prefix.hit_rate_pool <= 0:
        return None, None
    cached = (np.floor(tokens * prefix.cached_fraction / BLOCK_TOKENS) * BLOCK_TOKENS).astype(
        np.int64
    )
    cached = np.minimum(cached, tokens - 1)
    pd = np.where(rng.random(tokens.size) < prefix.hit_rate_pd, cached, 0)
    pool = np.where(rng.random(tokens.size) < prefix.hit_rate_pool, cached, 0)
    return pd.astype(np.int64), pool.astype(np.int64)


def from_trace(
    options: SimOptions,
    rate: float | None,
    rng: np.random.Generator,
    untimed_rate: float | None = None,
) -> Requests:
    """Replay at the trace's timing (rescaled to ``rate`` if given); a trace without timestamps
    arrives as Poisson at ``rate`` or else ``untimed_rate``."""
    assert options.trace is not None
    rows = read_trace(options.trace)
    if options.requests is not None:
        rows = rows[: options.requests]
    tokens = np.array([r.input_length for r in rows], dtype=np.int64)
    output = np.array([r.output_length for r in rows], dtype=np.int64)
    arrival = _trace_times(options, rows, rate, untimed_rate, rng)
    if options.duration_s is not None:
        keep = arrival < float(options.duration_s)
        if not keep.any():
            raise TraceError(f"{options.trace}: no request arrives within the duration")
        rows = [r for r, k in zip(rows, keep, strict=True) if k]
        arrival, tokens, output = arrival[keep], tokens[keep], output[keep]
    hashes = None
    if options.prefix.use_hash_ids and all(r.hash_ids is not None for r in rows):
        hashes = [r.hash_ids for r in rows if r.hash_ids is not None]
    pd, pool = (None, None) if hashes else hit_rate_prefixes(tokens, options.prefix, rng)
    return Requests(arrival, tokens, output, hashes, pd, pool)


def _trace_times(
    options: SimOptions,
    rows: list[TraceRow],
    rate: float | None,
    untimed_rate: float | None,
    rng: np.random.Generator,
) -> FloatArray:
    if rows[0].timestamp_ms is None:
        rate = rate or untimed_rate
        if rate is None:
            raise TraceError(f"{options.trace}: the trace has no timestamps; give a rate")
        return poisson_times(rate, len(rows), None, rng)
    stamps: FloatArray = np.array([r.timestamp_ms for r in rows], dtype=np.float64) / 1000.0
    arrival: FloatArray = stamps - stamps[0]
    span = float(arrival[-1])
    if rate is not None:
        if span <= 0:
            raise TraceError(f"{options.trace}: all timestamps are equal; cannot rescale")
        arrival = arrival * ((len(rows) - 1) / span / rate)
    return arrival


def generate(
    grid: LengthGrid,
    output_tokens: float,
    options: SimOptions,
    rate: float | None,
    untimed_rate: float | None = None,
) -> Requests:
    """Requests for ``options`` at ``rate`` req/s (traces: their own timing unless a rate)."""
    rng = np.random.default_rng(options.seed)
    if options.arrivals == "trace":
        return from_trace(options, rate, rng, untimed_rate)
    assert rate is not None
    n = _count(options, rate)
    if options.arrivals == "bursty":
        arrival = bursty_times(rate, options, n, rng)
    else:
        arrival = poisson_times(rate, n, options.duration_s, rng)
    if arrival.size == 0:
        raise SimError("no request arrives: raise the rate or the duration")
    arrival = arrival - arrival[0]
    tokens = sample_lengths(grid, arrival.size, rng)
    output = np.full(arrival.size, max(1, round(output_tokens)), dtype=np.int64)
    pd, pool = hit_rate_prefixes(tokens, options.prefix, rng)
    return Requests(arrival, tokens, output, None, pd, pool)
