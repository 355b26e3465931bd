"""An inter-datacenter link shared by concurrent transfers (max-min fair, with rate caps).

A layer-pipelined KV transfer cannot run ahead of the prefill producing it: while the prefill
computes, its flow is capped at ``bytes / T_prefill`` (the KV generation rate); once the prefill
is done the cap is lifted and only its fair share of the link limits it. Capacity is shared by
water-filling: flows capped below the equal share get their cap, the rest split what is left.
(A flow that fell behind while computing may in reality catch up faster than its cap; this model
does not let it, a slightly pessimistic simplification.)

Units: gigabits and seconds (Gbps). The link keeps its delivered volume per time bucket.
"""

from __future__ import annotations

import math
from typing import Any

_DONE = 1e-6  # gigabits: a flow with less left than this (a kilobit) is complete


class Flow:
    """``size`` gigabits to move; ``kind`` and ``owner`` tell the engine what finished."""

    __slots__ = ("cap", "end", "kind", "owner", "rate", "remaining", "size", "start")

    def __init__(
        self, gbit: float, cap: float, kind: int, owner: Any, start: float, end: float
    ) -> None:
        self.size = gbit
        self.remaining = gbit
        self.cap = cap
        self.rate = 0.0
        self.kind = kind
        self.owner = owner
        self.start = start  # the bytes are produced over [start, end] (the prefill)
        self.end = end

    def backlog(self, now: float) -> float:
        """Produced but not yet delivered: what a router sees as in flight."""
        if now >= self.end or self.end <= self.start:
            produced = self.size
        else:
            produced = self.size * (now - self.start) / (self.end - self.start)
        return max(0.0, produced - (self.size - self.remaining))


class Link:
    __slots__ = (
        "_bucket_s",
        "capacity",
        "delivered",
        "flows",
        "generation",
        "last",
        "per_bucket",
        "total_rate",
    )

    def __init__(self, capacity_gbps: float, bucket_s: float) -> None:
        self.capacity = capacity_gbps
        self.flows: list[Flow] = []
        self.last = 0.0
        self.total_rate = 0.0
        self.generation = 0  # bumps on every reshare; stale wake-ups are ignored
        self.delivered = 0.0  # gigabits, all time
        self._bucket_s = bucket_s
        self.per_bucket: list[float] = []  # gigabits delivered in each time bucket

    def in_flight(self, now: float) -> float:
        return sum(f.backlog(now) for f in self.flows)

    def advance(self, now: float) -> None:
        dt = now - self.last
        if dt <= 0:
            return
        if self.total_rate > 0:
            for f in self.flows:
                f.remaining -= f.rate * dt
            moved = self.total_rate * dt
            self.delivered += moved
            self._account(self.last, now)
        self.last = now

    def _account(self, t0: float, t1: float) -> None:
        w, rate, buckets = self._bucket_s, self.total_rate, self.per_bucket
        while t0 < t1:
            b = int(t0 // w)
            end = min(t1, (b + 1) * w)
            if b >= len(buckets):
                buckets.extend([0.0] * (b + 1 - len(buckets)))
            buckets[b] += rate * (end - t0)
            t0 = end

    def reshare(self) -> float:
        """Water-fill the capacity over the flows; returns the next completion time (or inf)."""
        self.generation += 1
        flows = self.flows
        if not flows:
            self.total_rate = 0.0
            return math.inf
        left, n = self.capacity, len(flows)
        if n == 1:
            f = flows[0]
            f.rate = min(f.cap, left)
        else:
            for k, f in enumerate(sorted(flows, key=_cap)):
                share = left / (n - k)
                if f.cap <= share:
                    f.rate = f.cap
                    left -= f.cap
                else:
                    f.rate = share
                    left -= share
        total, soonest = 0.0, math.inf
        for f in flows:
            total += f.rate
            if f.rate > 0:
                t = f.remaining / f.rate
                if t < soonest:
                    soonest = t
        self.total_rate = total
        return self.last + max(0.0, soonest)

    def pop_done(self) -> list[Flow]:
        done = [f for f in self.flows if f.remaining <= _DONE]
        if done:
            self.flows = [f for f in self.flows if f.remaining > _DONE]
        return done


def _cap(f: Flow) -> float:
    return f.cap
