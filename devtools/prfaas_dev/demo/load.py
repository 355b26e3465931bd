"""Open-loop case-study traffic for the demo: Poisson arrivals, log-normal prompt lengths,
streamed answers, TTFT measured at the client.

Rates and times are *nominal* (the case study's seconds); the generator sends ``speedup``
times faster and reports wall times multiplied back. Prompts are text of ~4 bytes per token
(the router's documented approximation) with a unique head, so no two share a prefix.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import aiohttp
import numpy as np

_FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor " * 8192


@dataclass
class Record:
    sent: float  # wall clock (monotonic)
    tokens: int
    ttft: float | None = None  # wall seconds
    done: float | None = None
    ok: bool = False
    target: str = ""


@dataclass
class Traffic:
    rate: float  # nominal req/s
    mu: float = 9.90
    sigma: float = 1.00
    lo: int = 128
    hi: int = 131_072
    output_tokens: int = 1024


@dataclass
class LoadGen:
    url: str
    traffic: Traffic
    speedup: float
    seed: int = 1
    records: deque[Record] = field(default_factory=lambda: deque(maxlen=200_000))
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    inflight: int = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _length(self, rng: np.random.Generator) -> int:
        t = self.traffic
        while True:  # the truncated log-normal the planner uses
            n = int(rng.lognormal(t.mu, t.sigma))
            if t.lo <= n <= t.hi:
                return n

    async def _run(self) -> None:
        rng = np.random.default_rng(self.seed)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
        async with aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
        ) as session:
            tasks: set[asyncio.Task[None]] = set()
            nxt = time.monotonic()
            while not self._stop.is_set():
                nxt += rng.exponential(1.0 / (self.traffic.rate * self.speedup))
                delay = nxt - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(self._one(session, self._length(rng)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, session: aiohttp.ClientSession, tokens: int) -> None:
        head = uuid.uuid4().hex
        text = head + _FILLER[: max(0, tokens * 4 - len(head))]
        rec = Record(time.monotonic(), tokens)
        self.records.append(rec)
        body = {
            "model": "sim-model",
            "prompt": text,
            "stream": True,
            "max_tokens": self.traffic.output_tokens,
        }
        self.inflight += 1
        try:
            async with session.post(self.url + "/v1/completions", json=body) as resp:
                rec.target = resp.headers.get("X-PrfaaS-Prefill", "")
                if resp.status != 200:
                    await resp.read()
                    return
                async for _ in resp.content.iter_any():
                    if rec.ttft is None:
                        rec.ttft = time.monotonic() - rec.sent
                rec.done = time.monotonic()
                rec.ok = True
        except (aiohttp.ClientError, TimeoutError):
            rec.done = time.monotonic()
        finally:
            self.inflight -= 1


@dataclass(frozen=True)
class Window:
    """What the client saw in a window of wall time, in nominal units."""

    sent: int
    completed: int
    failed: int
    throughput: float  # completed req/s, nominal
    ttft_p50: float
    ttft_p90: float
    goodput: float  # completed with TTFT <= SLO, req/s nominal
    offload: float  # fraction prefilled on the pool


def window(records: list[Record], start: float, end: float, speedup: float, slo_s: float) -> Window:
    """Throughput and goodput count completions in [start, end); TTFT and offload are over the
    requests *sent* in it (one still waiting counts with the TTFT it has at least)."""
    sent = [r for r in records if start <= r.sent < end]
    done = [r for r in records if r.ok and r.done is not None and start <= r.done < end]
    failed = [r for r in sent if r.done is not None and not r.ok]
    nominal = max(1e-9, (end - start) * speedup)
    ttfts = np.array([r.ttft * speedup for r in sent if r.ttft is not None])
    # a request still waiting has a TTFT of at least (end - sent): count it, don't drop it
    waiting = np.array(
        [(end - r.sent) * speedup for r in sent if r.ttft is None and r.done is None]
    )
    all_t = np.concatenate([ttfts, waiting]) if len(waiting) else ttfts
    p50 = float(np.percentile(all_t, 50)) if len(all_t) else math.nan
    p90 = float(np.percentile(all_t, 90)) if len(all_t) else math.nan
    good = sum(1 for r in done if r.ttft is not None and r.ttft * speedup <= slo_s)
    pooled = sum(1 for r in sent if r.target == "pool")
    return Window(
        len(sent),
        len(done),
        len(failed),
        len(done) / nominal,
        p50,
        p90,
        good / nominal,
        pooled / len(sent) if sent else 0.0,
    )
