"""Every ``interval`` seconds: scrape each engine's ``/metrics`` (health and queue depth),
fold the router's own link accounting into the routing core, run its short-timescale
adaptation, and export what it decided."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp

from prfaas import metric_names
from prfaas.router.fleet import Engine, Fleet
from prfaas.router.metrics import RouterMetrics

log = logging.getLogger("prfaas.router")
_WAITING = metric_names.ENGINE_REQUESTS_WAITING
_RUNNING = "vllm:num_requests_running"


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
            engine.waiting, engine.running = parse_queue(await resp.text())
        if not engine.healthy:
            log.info("engine %s is back", engine.url)
        engine.healthy = True
    except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError) as exc:
        if engine.healthy:
            log.warning("engine %s unreachable: %s", engine.url, exc or type(exc).__name__)
        engine.healthy = False


def export(fleet: Fleet, metrics: RouterMetrics) -> None:
    core, policy = fleet.core, fleet.policy
    if policy is None:
        return
    for e in fleet.engines.values():
        metrics.engine_waiting.labels(e.url).set(e.waiting)
        metrics.engine_up.labels(e.url).set(1 if e.healthy else 0)
    t = policy.threshold_tokens
    metrics.policy_threshold.set(-1 if t is None else t)
    metrics.policy_version.set(policy.version)
    for route, ps in zip(policy.pools, core.live.pools, strict=True):
        name = route.name
        util = ps.link.utilisation()
        metrics.link_utilisation.labels(name).set(util if util != float("inf") else -1)
        metrics.link_in_flight.labels(name).set(ps.link.bytes_in_flight)
        metrics.link_up.labels(name).set(1 if ps.link.healthy else 0)
        metrics.mode.labels(name).set(int(ps.mode))
        if t is not None:
            metrics.threshold.labels(name).set(ps.threshold(t))


async def run(
    fleet: Fleet, metrics: RouterMetrics, session: aiohttp.ClientSession, interval: float
) -> None:
    while True:
        try:
            engines = list(fleet.engines.values())
            if engines:
                timeout = max(0.2, interval * 0.8)
                await asyncio.gather(*(scrape(session, e, timeout) for e in engines))
            now = time.monotonic()
            fleet.sync_health(now)
            fleet.core.observe(now)
            export(fleet, metrics)
        except Exception:  # the loop must outlive any one pass: health would freeze otherwise
            log.exception("telemetry pass failed")
        await asyncio.sleep(interval)
