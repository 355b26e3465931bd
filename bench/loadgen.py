"""A small asyncio/aiohttp load generator for the router benchmarks.

Open loop: request ``i`` is due at ``start + offsets[i]`` whatever happened before, and its
latency is counted from when it was *due*, so a client or server that falls behind shows up in
the latency (no coordinated omission); ``lag`` says how late the client itself sent. Closed
loop (``closed_loop``): ``concurrency`` workers back to back, for the highest sustained rate.

A ``Target`` sends one request and returns (ttft, latency) in seconds from the moment it was
called: through a router (``Via``), or straight to the engines in the same P/D flow the peers use
(``DirectTwoPhase``: vLLM NIXL-style; ``DirectBootstrap``: SGLang-style), the baselines that
give a router's added latency.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


class RequestFailedError(Exception):
    """A non-200 answer."""


class Target(Protocol):
    name: str

    async def __call__(
        self, session: aiohttp.ClientSession, kind: str, body: dict[str, Any]
    ) -> tuple[float | None, float]: ...


async def _consume(resp: aiohttp.ClientResponse, stream: bool, t0: float) -> float | None:
    """Read a response to its end; for SSE return the time of the first non-empty token."""
    if resp.status != 200:
        text = await resp.text()
        raise RequestFailedError(f"{resp.status}: {text[:200]}")
    if not stream:
        await resp.read()
        return None
    ttft = None
    async for line in resp.content:
        if (
            ttft is None
            and line.startswith(b"data: {")
            and (b'"text":" ' in line or b'"content":" ' in line)
        ):
            ttft = time.perf_counter() - t0
    return ttft


@dataclass
class Via:
    """Through a router (or straight to a ``--role both`` engine)."""

    name: str
    url: str

    async def __call__(
        self, session: aiohttp.ClientSession, kind: str, body: dict[str, Any]
    ) -> tuple[float | None, float]:
        t0 = time.perf_counter()
        stream = bool(body.get("stream"))
        async with session.post(self.url + PATHS[kind], json=body) as resp:
            ttft = await _consume(resp, stream, t0)
        return ttft, time.perf_counter() - t0


@dataclass
class DirectTwoPhase:
    """vLLM's NIXL hand-off done by the client: prefill (1 token, JSON), then decode with the
    returned ``kv_transfer_params``; engines picked round-robin as the routers do."""

    name: str
    prefills: Sequence[str]
    decodes: Sequence[str]
    _rr: itertools.count[int] = field(default_factory=itertools.count)

    async def __call__(
        self, session: aiohttp.ClientSession, kind: str, body: dict[str, Any]
    ) -> tuple[float | None, float]:
        i = next(self._rr)
        p, d = self.prefills[i % len(self.prefills)], self.decodes[i % len(self.decodes)]
        t0 = time.perf_counter()
        first = {**body, "stream": False, "max_tokens": 1, "min_tokens": 1}
        first.pop("stream_options", None)
        first["kv_transfer_params"] = {"do_remote_decode": True, "do_remote_prefill": False}
        async with session.post(p + PATHS[kind], json=first) as resp:
            if resp.status != 200:
                raise RequestFailedError(f"prefill {resp.status}: {(await resp.text())[:200]}")
            kvp = (await resp.json()).get("kv_transfer_params")
        second = {**body, "kv_transfer_params": kvp}
        async with session.post(d + PATHS[kind], json=second) as resp:
            ttft = await _consume(resp, bool(body.get("stream")), t0)
        return ttft, time.perf_counter() - t0


@dataclass
class DirectBootstrap:
    """SGLang's hand-off done by the client: the same body, with ``bootstrap_host/port/room``,
    to a prefill and a decode at once; the answer is decode's (prefill drained)."""

    name: str
    prefills: Sequence[tuple[str, str, int]]  # (url, bootstrap host, bootstrap port)
    decodes: Sequence[str]
    _rr: itertools.count[int] = field(default_factory=itertools.count)
    _rng: random.Random = field(default_factory=random.Random)

    async def __call__(
        self, session: aiohttp.ClientSession, kind: str, body: dict[str, Any]
    ) -> tuple[float | None, float]:
        i = next(self._rr)
        p, host, port = self.prefills[i % len(self.prefills)]
        d = self.decodes[i % len(self.decodes)]
        room = self._rng.getrandbits(63)
        both = {**body, "bootstrap_host": host, "bootstrap_port": port, "bootstrap_room": room}
        t0 = time.perf_counter()
        stream = bool(body.get("stream"))

        async def prefill() -> None:
            async with session.post(p + PATHS[kind], json=both) as resp:
                if resp.status != 200:
                    raise RequestFailedError(f"prefill {resp.status}: {(await resp.text())[:200]}")
                await resp.read()

        async def decode() -> float | None:
            async with session.post(d + PATHS[kind], json=both) as resp:
                return await _consume(resp, stream, t0)

        _, ttft = await asyncio.gather(prefill(), decode())
        return ttft, time.perf_counter() - t0


@dataclass
class Samples:
    target: str
    planned: int = 0
    ok: int = 0
    errors: int = 0
    first_error: str = ""
    latency: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)
    duration_s: float = 0.0
    tags: list[Any] = field(default_factory=list)  # per ok request, in completion order

    @property
    def rate(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0


def pct(xs: Sequence[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def session(timeout_s: float = 120.0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=False),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        json_serialize=lambda o: json.dumps(o, separators=(",", ":")),
    )


async def open_loop(
    target: Target,
    requests: Sequence[tuple[float, str, dict[str, Any], Any]],  # (offset s, kind, body, tag)
    timeout_s: float = 120.0,
    on_done: Callable[[Any, float | None, float], None] | None = None,
) -> Samples:
    """Send every request at its offset; wait for all to finish."""
    out = Samples(target.name, planned=len(requests))
    async with session(timeout_s) as s:

        async def one(due: float, kind: str, body: dict[str, Any], tag: Any) -> None:
            sent = time.perf_counter()
            out.lag.append(sent - due)
            try:
                ttft, latency = await target(s, kind, body)
            except (aiohttp.ClientError, TimeoutError, RequestFailedError, ValueError) as exc:
                out.errors += 1
                out.first_error = out.first_error or f"{type(exc).__name__}: {exc}"
                return
            late = sent - due
            out.ok += 1
            out.latency.append(latency + late)
            if ttft is not None:
                out.ttft.append(ttft + late)
            out.tags.append(tag)
            if on_done is not None:
                on_done(tag, None if ttft is None else ttft + late, latency + late)

        start = time.perf_counter() + 0.05
        tasks = []
        for offset, kind, body, tag in requests:
            due = start + offset
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due, kind, body, tag)))
        await asyncio.gather(*tasks)
        out.duration_s = time.perf_counter() - start
    return out


async def closed_loop(
    target: Target,
    make: Callable[[int], tuple[str, dict[str, Any]]],
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
) -> Samples:
    """``concurrency`` workers back to back; counts what completes after the warm-up."""
    out = Samples(target.name)
    counter = itertools.count()
    async with session() as s:
        t_start = time.perf_counter()
        t_measure, t_end = t_start + warmup_s, t_start + warmup_s + duration_s

        async def worker() -> None:
            while (now := time.perf_counter()) < t_end:
                kind, body = make(next(counter))
                try:
                    _, latency = await target(s, kind, body)
                except (aiohttp.ClientError, TimeoutError, RequestFailedError, ValueError) as exc:
                    out.errors += 1
                    out.first_error = out.first_error or f"{type(exc).__name__}: {exc}"
                    continue
                if now >= t_measure and time.perf_counter() <= t_end:
                    out.ok += 1
                    out.latency.append(latency)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        out.duration_s = duration_s
    return out
