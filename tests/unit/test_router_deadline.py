"""Phase bounds: derived from the profiles, and the timer that enforces them (expires, extends
while the wait is legitimate, ends early on demand, never swallows the client's cancellation).
The SSE framing that lets a cut stream end with a clean error event."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from prfaas.model.scenario import case_study
from prfaas.router.deadline import Deadline, PhaseBudget, PhaseTimeoutError
from prfaas.router.server import _Events

BUDGET = PhaseBudget.from_scenario(case_study(), speedup=20.0, factor=3.0, floor_s=1.0)


def t_h200(tokens: float) -> float:
    inst = case_study().prefill_pool.instance
    return float(inst.prefill.curve(1 << 20)(np.array([tokens]))[0])


def test_prefill_bound_is_the_profile_time_times_the_factor_plus_what_is_queued_ahead() -> None:
    alone = BUDGET.prefill_s(True, 40_000)
    assert alone == pytest.approx(1.0 + 3.0 * t_h200(40_000) / 20.0)
    # 10 requests of 1,000 tokens ahead: each pays the fixed cost, not one 10,000-token prefill
    queued = BUDGET.prefill_s(True, 40_000, ahead_tokens=10_000, ahead_requests=10)
    assert queued - alone >= 3.0 * 10 * t_h200(1_000) / 20.0 * 0.95
    assert BUDGET.prefill_s(False, 40_000) > alone  # H20 prefill is slower than H200


def test_prefill_bound_matches_the_curve_at_any_length_in_and_beyond_its_table() -> None:
    """The per-request bound reads a table (pure Python, no numpy per request): it must agree
    with the profile's curve, also between table points and past the table's end."""
    for tokens in (0, 1, 255, 257, 12_345.5, 40_000, 131_071, (1 << 20) - 1, 1 << 20, 3 << 20):
        expected = 1.0 + 3.0 * t_h200(max(1.0, tokens)) / 20.0
        assert BUDGET.prefill_s(True, int(tokens)) == pytest.approx(expected, rel=1e-4)


def test_first_byte_bound_counts_the_link_backlog_and_the_tokens_before_the_first_byte() -> None:
    step = case_study().pd_cluster.instance.decode.step_seconds  # type: ignore[union-attr]
    stream = BUDGET.first_byte_s(kv_seconds=0.5, tokens_to_first_byte=1)
    assert stream == pytest.approx(1.0 + 3.0 * (0.5 + step / 20.0))
    whole = BUDGET.first_byte_s(kv_seconds=0.5, tokens_to_first_byte=1024)  # a JSON answer
    assert whole == pytest.approx(1.0 + 3.0 * (0.5 + 1024 * step / 20.0))
    off = PhaseBudget.from_scenario(case_study(), factor=0)
    assert math.isinf(off.prefill_s(True, 1)) and math.isinf(off.first_byte_s(1, 1))


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_a_deadline_expires_and_only_its_block_sees_it() -> None:
    async def main() -> tuple[float, str]:
        t0 = asyncio.get_running_loop().time()
        try:
            with Deadline(0.05):
                await asyncio.sleep(10)
        except PhaseTimeoutError as exc:
            took = asyncio.get_running_loop().time() - t0
            await asyncio.sleep(0.01)  # the task is not left cancelled
            return took, str(exc)
        raise AssertionError("no timeout")

    took, message = run(main())  # type: ignore[misc]
    assert 0.04 < took < 1.0 and "0.1 s" in message


def test_a_deadline_is_extended_while_the_wait_is_legitimate() -> None:
    async def main() -> int:
        grants = [3]

        def extend() -> bool:
            grants[0] -= 1
            return grants[0] >= 0

        with Deadline(0.02, extend):
            await asyncio.sleep(0.2)  # 10 periods: 3 granted, then it expires
        return 0

    with pytest.raises(PhaseTimeoutError):
        run(main())

    async def patient() -> str:
        with Deadline(0.02, lambda: True):
            await asyncio.sleep(0.15)
        return "done"

    assert run(patient()) == "done"


def test_expire_ends_the_wait_now_and_is_harmless_afterwards() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        dl = Deadline(10.0)
        loop.call_later(0.03, lambda: dl.expire())
        with pytest.raises(PhaseTimeoutError), dl:
            await asyncio.sleep(10)
        took = loop.time() - t0
        dl.expire()  # after the block: nothing to cancel
        await asyncio.sleep(0.01)
        return took

    assert run(main()) < 1.0  # type: ignore[operator]


def test_the_clients_cancellation_is_never_turned_into_a_timeout() -> None:
    async def handler(dl: Deadline) -> None:
        with dl:
            await asyncio.sleep(10)

    async def main() -> None:
        dl = Deadline(10.0)
        task = asyncio.create_task(handler(dl))
        await asyncio.sleep(0.01)
        task.cancel()  # the client went away...
        dl.expire()  # ...and the engine was found hung at the same moment
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())


def test_sse_events_pass_whole_and_done_is_noticed_only_as_the_last_event() -> None:
    ev = _Events()
    assert ev.feed(b'data: {"a": 1}\n\ndata: {"b"') == b'data: {"a": 1}\n\n'  # half held back
    assert ev.feed(b": 2}\n\n") == b'data: {"b": 2}\n\n' and not ev.done
    assert ev.feed(b"data: [DONE]\n\n") == b"data: [DONE]\n\n" and ev.done
    crlf = _Events()
    assert crlf.feed(b"data: x\r\n\r\ndata: [DO") == b"data: x\r\n\r\n"
    assert crlf.feed(b"NE]\r\n\r\n") == b"data: [DONE]\r\n\r\n" and crlf.done
    cut = _Events()  # a token that spells [DONE] inside JSON is not the end
    cut.feed(b'data: {"text": "data: [DONE]"}\n\n')
    assert not cut.done
    tail = _Events()  # an engine that ends without the blank line still ends with [DONE]
    assert tail.feed(b"data: [DONE]") == b""
    assert tail.flush() == b"data: [DONE]" and tail.done
