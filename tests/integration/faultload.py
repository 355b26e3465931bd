"""Open-loop load for the fault suite: Poisson arrivals, a share of long prompts, streaming and
not, each answer checked token by token and classified as the client sees it.

- ``ok``: 200 and the whole answer (a stream with ``[DONE]``, a JSON answer with every token);
- ``failed``: an explicit error (a non-200 status, or a stream that ends with an error event
  and no ``[DONE]``): the client knows;
- ``truncated``: anything else (200 but cut short without an error, a connection dropped
  without a status): the silent breakage the router must never let through.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from prfaas.engine.server import expected_text

MODEL = "sim-model"


@dataclass
class Outcome:
    sent: float  # monotonic
    stream: bool
    max_tokens: int
    prompt_tokens: int
    status: int | None = None
    prefill: str = ""  # X-PrfaaS-Prefill
    first_at: float | None = None  # first answer byte
    done_at: float | None = None
    text: str = ""
    saw_done: bool = False
    error: dict[str, Any] | None = None  # error body or error event
    tokens_before_error: int = 0
    exc: str | None = None  # the client's own exception (no HTTP status, or a broken body)

    @property
    def kind(self) -> str:
        if self.error is not None and not self.saw_done and self.exc is None:
            return "failed"
        whole = self.text == expected_text(self.max_tokens) and (self.saw_done or not self.stream)
        return "ok" if self.status == 200 and self.exc is None and whole else "truncated"

    @property
    def latency(self) -> float:
        return (self.done_at or self.sent) - self.sent

    @property
    def ttfb(self) -> float:
        """Sent to the first byte of the answer (or of the error)."""
        return (self.first_at or self.done_at or self.sent) - self.sent


@dataclass
class Mix:
    rate: float = 20.0  # requests per second
    long_share: float = 0.4
    short: tuple[int, int] = (1_000, 8_000)  # prompt tokens
    long: tuple[int, int] = (22_000, 30_000)
    stream_share: float = 0.5
    stream_tokens: tuple[int, int] = (1_000, 3_000)
    json_tokens: tuple[int, int] = (50, 200)


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)  # event name -> monotonic time

    def count(self) -> dict[str, int]:
        kinds = [o.kind for o in self.outcomes]
        return {
            "sent": len(kinds),
            "ok": kinds.count("ok"),
            "failed": kinds.count("failed"),
            "truncated": kinds.count("truncated"),
        }


_uid = [0]
_uid_lock = threading.Lock()


def text_prompt(tokens: int) -> str:
    """~``tokens`` tokens of text (4 bytes each) that share no prefix with any other prompt."""
    with _uid_lock:
        _uid[0] += 1
        head = f"{_uid[0]:012d}{time.monotonic_ns():020d} "
    return head + "x" * max(0, tokens * 4 - len(head))


async def request(
    session: aiohttp.ClientSession, url: str, tokens: int, max_tokens: int, stream: bool
) -> Outcome:
    out = Outcome(time.monotonic(), stream, max_tokens, tokens)
    body = {"model": MODEL, "prompt": text_prompt(tokens), "max_tokens": max_tokens}
    body["stream"] = stream
    try:
        async with session.post(url + "/v1/completions", json=body) as resp:
            out.status = resp.status
            out.prefill = resp.headers.get("X-PrfaaS-Prefill", "")
            if resp.status != 200:
                raw = await resp.read()
                out.first_at = time.monotonic()
                out.error = _error_of(raw)
            elif stream:
                await _read_stream(resp, out)
            else:
                raw = await resp.read()
                out.first_at = time.monotonic()
                out.text = json.loads(raw)["choices"][0]["text"]
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
        out.exc = f"{type(exc).__name__}: {exc}"
    out.done_at = time.monotonic()
    return out


def _error_of(raw: bytes) -> dict[str, Any]:
    try:
        err = json.loads(raw).get("error")
    except ValueError:
        err = None
    return err if isinstance(err, dict) else {"message": raw[:200].decode(errors="replace")}


async def _read_stream(resp: aiohttp.ClientResponse, out: Outcome) -> None:
    buf = b""
    async for chunk in resp.content.iter_any():
        if out.first_at is None:
            out.first_at = time.monotonic()
        buf += chunk
        *events, buf = buf.split(b"\n\n")
        for event in events:
            data = event.decode().removeprefix("data: ").strip()
            if data == "[DONE]":
                out.saw_done = True
                continue
            obj = json.loads(data)
            if "error" in obj:
                out.error = obj["error"]
                out.tokens_before_error = out.text.count(" tok")
                continue
            for c in obj.get("choices", []):
                out.text += c.get("text") or ""
    if buf.strip():
        raise ValueError(f"stream ended inside an event: {buf[:80]!r}")


def drive(
    url: str,
    duration_s: float,
    mix: Mix,
    seed: int,
    events: dict[float, Callable[[], None]] | None = None,
    burst: int = 0,
) -> Run:
    """Send ``mix`` to ``url`` for ``duration_s`` (plus ``burst`` concurrent requests at once
    at the start), run ``events`` (offset s → blocking callable, in a thread) on time, and wait
    for every answer. Event names go into ``Run.marks`` as they run."""
    return asyncio.run(_drive(url, duration_s, mix, seed, events or {}, burst))


async def _drive(
    url: str,
    duration_s: float,
    mix: Mix,
    seed: int,
    events: dict[float, Callable[[], None]],
    burst: int,
) -> Run:
    rng = random.Random(seed)
    run = Run()
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        tasks: list[asyncio.Task[Outcome]] = []

        def launch() -> None:
            long = rng.random() < mix.long_share
            tokens = rng.randint(*(mix.long if long else mix.short))
            stream = rng.random() < mix.stream_share
            n = rng.randint(*(mix.stream_tokens if stream else mix.json_tokens))
            tasks.append(asyncio.create_task(request(session, url, tokens, n, stream)))

        async def run_event(at: float, fn: Callable[[], None]) -> None:
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            run.marks[getattr(fn, "__name__", str(at))] = time.monotonic()
            await loop.run_in_executor(None, fn)

        side = [asyncio.create_task(run_event(at, fn)) for at, fn in sorted(events.items())]
        for _ in range(burst):
            launch()
        t = 0.0
        while True:
            t += rng.expovariate(mix.rate)
            if t >= duration_s:
                break
            await asyncio.sleep(max(0.0, start + t - time.monotonic()))
            launch()
        run.outcomes = list(await asyncio.gather(*tasks))
        for s in side:
            await s
    return run
