"""Every ``interval`` seconds: scrape each engine's ``/metrics`` (health, queue depth and, on
pool engines, the link's load as the pool side reports it: ``linkload``), fold the link's
bytes into the routing core, run its short-timescale adaptation, probe links that failed, and
export what it decided.

An engine that refuses the connection, or misses ``HUNG_AFTER`` scrapes in a row, is *hung*:
requests still waiting on it (``Engine.watching``) stop waiting and fail over. One missed scrape
only keeps new requests away until it answers again (a loaded engine may be slow to answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
from prometheus_client import Gauge

from prfaas import metric_names
from prfaas.router import linkload
from prfaas.router.fleet import Engine, Fleet
from prfaas.router.metrics import RouterMetrics
from prfaas.routing.policy import RoutingPolicy

log = logging.getLogger("prfaas.router")
_WAITING = metric_names.ENGINE_REQUESTS_WAITING
_RUNNING = "vllm:num_requests_running"
HUNG_AFTER = 2


def parse_queue(text: str) -> tuple[float, float]:
    """Sum of waiting and running series in a Prometheus text exposition."""
    waiting = running = 0.0
    for line in text.splitlines():
        if line.startswith(_WAITING) or line.startswith(_RUNNING):
            name, _, value = line.rpartition(" ")
            try:
                v = float(value)
            except ValueError:
                continue
            if name.startswith(_WAITING):
                waiting += v
            else:
                running += v
    return waiting, running


async def scrape(session: aiohttp.ClientSession, engine: Engine, timeout: float) -> None:
    try:
        async with session.get(
            engine.url.rstrip("/") + "/metrics", timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            if resp.status != 200:
                raise aiohttp.ClientError(f"status {resp.status}")
            text = await resp.text()
            engine.waiting, engine.running = parse_queue(text)
            linkload.read(engine, text)
        engine.others = max(0.0, engine.waiting + engine.running - engine.active)
        if not engine.healthy:
            log.info("engine %s is back", engine.url)
        engine.healthy, engine.fails, engine.refused = True, 0, False
    except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError) as exc:
        linkload.forget(engine)
        if engine.healthy:
            log.warning("engine %s unreachable: %s", engine.url, exc or type(exc).__name__)
        engine.healthy = False
        engine.fails += 1
        engine.refused = not isinstance(exc, TimeoutError)  # it answered, or nothing listens
        if isinstance(exc, aiohttp.ClientConnectorError) or engine.fails >= HUNG_AFTER:
            engine.hung()


def export(fleet: Fleet, metrics: RouterMetrics) -> None:
    core, policy = fleet.core, fleet.policy
    if policy is None:
        return
    for e in fleet.engines.values():
        metrics.engine_waiting.labels(e.url).set(e.waiting)
        metrics.engine_up.labels(e.url).set(1 if e.healthy else 0)
        metrics.engine_in_flight.labels(e.url).set(e.active)
        metrics.engine_draining.labels(e.url).set(0)
    for e in fleet.draining.values():
        metrics.engine_in_flight.labels(e.url).set(e.active)
        metrics.engine_draining.labels(e.url).set(1)
    _forget_gone(fleet, metrics, policy)
    t = policy.threshold_tokens
    metrics.policy_threshold.set(-1 if t is None else t)
    metrics.policy_version.set(policy.version)
    for route, ps in zip(policy.pools, core.live.pools, strict=True):
        name = route.name
        util = ps.link.utilisation()
        metrics.link_utilisation.labels(name).set(util if util != float("inf") else -1)
        metrics.link_in_flight.labels(name).set(ps.link.in_flight())
        metrics.link_up.labels(name).set(1 if ps.link.healthy else 0)
        metrics.mode.labels(name).set(int(ps.mode))
        metrics.threshold.labels(name).set(-1 if t is None else ps.threshold(t))


def _forget_gone(fleet: Fleet, metrics: RouterMetrics, policy: RoutingPolicy) -> None:
    """Engines come and go with their pods, pools with the plan: drop the gauges of those that
    left (a draining engine keeps its in-flight series until it has drained; a pool's link
    gauges go at once: no phantom link)."""
    pools = {route.name for route in policy.pools}
    gone: list[tuple[str, tuple[Gauge, ...]]] = [(p, metrics.pool_gauges())
                                                 for p in metrics.pools - pools]  # fmt: skip
    for url in metrics.endpoints - set(fleet.engines):
        gauges: tuple[Gauge, ...] = (metrics.engine_waiting, metrics.engine_up)  # not scraped
        if url not in fleet.draining:
            gauges += (metrics.engine_in_flight, metrics.engine_draining)
        gone.append((url, gauges))
    for label, gauges in gone:
        for gauge in gauges:
            with contextlib.suppress(KeyError):  # removed already, while it drained
                gauge.remove(label)
    metrics.endpoints = set(fleet.engines) | set(fleet.draining)
    metrics.pools = pools


async def run(
    fleet: Fleet,
    metrics: RouterMetrics,
    session: aiohttp.ClientSession,
    interval: float,
    probe: Callable[[str], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """``probe(pool)``: check a failed link; runs in the background, one per pool at a time."""
    probes: dict[str, asyncio.Task[None]] = {}
    try:
        while True:
            await _pass(fleet, metrics, session, interval, probe, probes)
            await asyncio.sleep(interval)
    finally:
        for task in probes.values():
            task.cancel()


async def _pass(
    fleet: Fleet,
    metrics: RouterMetrics,
    session: aiohttp.ClientSession,
    interval: float,
    probe: Callable[[str], Coroutine[Any, Any, None]] | None,
    probes: dict[str, asyncio.Task[None]],
) -> None:
    """One scrape-and-export pass; a failure is logged, never fatal (health would freeze)."""
    try:
        engines = list(fleet.engines.values())
        if engines:
            timeout = max(0.2, interval * 0.8)
            await asyncio.gather(*(scrape(session, e, timeout) for e in engines))
            linkload.report(fleet)
        now = time.monotonic()
        fleet.sync_health()
        if probe is not None:
            for name in fleet.links_due(now):
                if name not in probes or probes[name].done():
                    probes[name] = asyncio.create_task(probe(name))
        fleet.core.observe(now)
        export(fleet, metrics)
    except Exception:
        log.exception("telemetry pass failed")
