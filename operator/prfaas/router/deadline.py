"""How long the router waits for each phase of a request, and the timer that enforces it.

``PhaseBudget`` derives the bounds from the instance profiles of the scenario the engines run
(``--scenario``, default the case study; ``--speedup`` for time-scaled simulated engines):

- prefill: ``floor + factor × (T(uncached) + what this router already queued there)``, ``T``
  the prefill latency curve of the target (PrefillPool or local PD-P instance) and ``n``
  requests of ``L`` tokens ahead counted as ``T(L) + (n − 1)·T(1)`` (at least their sum for a
  convex ``T``: each prefill pays the fixed cost);
- KV arrival and the first byte of the answer, one bound (with vLLM's hand-off the decode
  engine pulls the KVCache itself, so the router cannot tell the two apart):
  ``floor + factor × (link backlog + KV bytes / usable link rate + step × tokens to the first
  byte)``, where a stream's first byte is its first token and a JSON answer's is all of it.

``Deadline`` is ``asyncio.timeout`` with two additions: ``extend()`` may grant another period
when the wait is legitimate (a decode engine that answers its scrapes and has a queue), and
``expire()`` ends the wait at once (an engine found hung).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np

from prfaas.model.curves import Curve
from prfaas.model.scenario import Scenario

MAX_TOKENS = 1 << 20


class PhaseTimeoutError(TimeoutError):
    """A phase took longer than its bound."""


@dataclass(frozen=True, slots=True)
class PhaseBudget:
    pool_prefill: Curve  # seconds by uncached tokens, unscaled
    local_prefill: Curve
    step_s: float  # decode step, unscaled
    max_batch: int  # decode slots per engine
    speedup: float = 1.0
    factor: float = 3.0  # <= 0: no bounds
    floor_s: float = 1.0  # fixed overheads (HTTP, scheduling); not time-scaled
    _pool: _Scalar = field(init=False, repr=False, compare=False)
    _local: _Scalar = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # every request asks for one budget: numpy's per-call overhead on one length was 14%
        # of the router's CPU at 500 req/s, so the curves are tabulated once
        object.__setattr__(self, "_pool", _Scalar(self.pool_prefill))
        object.__setattr__(self, "_local", _Scalar(self.local_prefill))

    @classmethod
    def from_scenario(
        cls, scenario: Scenario, speedup: float = 1.0, factor: float = 3.0, floor_s: float = 1.0
    ) -> PhaseBudget:
        local = scenario.pd_cluster.instance
        decode = local.decode
        assert decode is not None  # the PD cluster's schema requires one
        return cls(
            pool_prefill=scenario.prefill_pool.instance.prefill.curve(MAX_TOKENS),
            local_prefill=local.prefill.curve(MAX_TOKENS),
            step_s=decode.step_seconds,
            max_batch=decode.max_batch_size,
            speedup=speedup,
            factor=factor,
            floor_s=floor_s,
        )

    @property
    def enabled(self) -> bool:
        return self.factor > 0

    def prefill_s(
        self, pool: bool, uncached: int, ahead_tokens: float = 0.0, ahead_requests: int = 0
    ) -> float:
        if not self.enabled:
            return math.inf
        at = self._pool if pool else self._local
        expected = at(uncached)
        if ahead_requests > 0:
            expected += at(ahead_tokens) + (ahead_requests - 1) * at(1)
        return self.floor_s + self.factor * expected / self.speedup

    def first_byte_s(self, kv_seconds: float, tokens_to_first_byte: int) -> float:
        """``kv_seconds``: the KV transfer's expected time on the link as the router sees it
        (already in wall time: the policy's link budget is what the link really carries)."""
        if not self.enabled:
            return math.inf
        decode = self.step_s * max(1, tokens_to_first_byte) / self.speedup
        return self.floor_s + self.factor * (kv_seconds + decode)


class _Scalar:
    """``curve`` at one length (at least 1 token) in pure Python: tabulated once every
    ``MAX_TOKENS / points`` tokens (256), linear in between, which is far finer than a budget
    needs; beyond the table, the curve itself."""

    __slots__ = ("_curve", "_step", "_ys")

    def __init__(self, curve: Curve, points: int = 4096) -> None:
        self._curve = curve
        self._step = MAX_TOKENS / points
        self._ys = [float(v) for v in curve(np.linspace(0.0, MAX_TOKENS, points + 1))]

    def __call__(self, tokens: float) -> float:
        t = max(1.0, tokens)
        pos = t / self._step
        i = int(pos)
        if i >= len(self._ys) - 1:
            return float(self._curve(np.array([t]))[0])
        lo = self._ys[i]
        return lo + (self._ys[i + 1] - lo) * (pos - i)


class Deadline:
    """``with Deadline(seconds, extend):`` around awaits of the current task: after ``seconds``
    the task is cancelled and ``PhaseTimeoutError`` leaves the block, unless ``extend()`` is true,
    which grants another ``seconds``. ``expire()`` cancels now (safe to call at any time)."""

    __slots__ = ("_exited", "_extend", "_handle", "_task", "expired", "seconds")

    def __init__(self, seconds: float, extend: Callable[[], bool] | None = None) -> None:
        self.seconds = seconds
        self.expired = False
        self._extend = extend
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._exited = False

    def __enter__(self) -> Deadline:
        self._task = asyncio.current_task()
        if self._task is None:
            raise RuntimeError("Deadline must be used inside a task")
        self._arm()
        return self

    def _arm(self) -> None:
        if math.isfinite(self.seconds) and self._task is not None:
            # the task's loop: asking for the running one costs a getpid on CPython 3.11
            self._handle = self._task.get_loop().call_later(self.seconds, self._fire)

    def _fire(self) -> None:
        if self._extend is not None and self._extend():
            self._arm()
        else:
            self.expire()

    def expire(self) -> None:
        if self._task is None or self._exited or self.expired:
            return
        self.expired = True
        if self._handle is not None:
            self._handle.cancel()
        self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exited = True
        if self._handle is not None:
            self._handle.cancel()
        if not self.expired or self._task is None:
            return
        # our cancel() is ours to take back; another one (the client went away) still stands
        if self._task.uncancel() == 0 and exc_type is asyncio.CancelledError:
            raise PhaseTimeoutError(f"no answer within {self.seconds:.1f} s") from None
