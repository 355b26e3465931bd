"""The router's HTTP front: the P/D flow per request, the decision API, health and metrics.

Per request: parse (400/404/413) → count tokens and hash prefix blocks → ``decide`` → phase 1,
prefill with ``max_tokens: 1`` and ``kv_transfer_params.do_remote_decode`` on the chosen
target → phase 2, the original body plus what prefill returned, on the least busy decode
engine; its answer is relayed as it comes (SSE chunks are written as they arrive). This is
vLLM's two-phase hand-off, so real vLLM engines with a KV connector fit too.

Fail open: a PrefillPool that cannot be reached, or whose KVCache does not arrive (decode
answers 502 ``kv_transfer_failed``), is routed around and the request is prefilled locally
instead; the client sees a slower answer, not an error. A decode failure is a 502 to the
client. A client that goes away cancels the upstream requests (aiohttp handler cancellation).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from prfaas.router import telemetry
from prfaas.router.fleet import Engine, Fleet
from prfaas.router.metrics import RouterMetrics
from prfaas.routing.decide import Decision, Target
from prfaas.routing.policy import RoutingPolicy
from prfaas.routing.tokens import PromptTokens
from prfaas.serving import openai
from prfaas.serving.http import (
    JSON,
    add_openai_routes,
    error_response,
    json_response,
    metrics_handler,
    read_json,
)
from prfaas.serving.openai import Kind, Prompt, RequestError
from prfaas.serving.tokenizer import Counter

log = logging.getLogger("prfaas.router")
_PATHS: dict[Kind, str] = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
_MAX_ATTEMPTS = 3  # the decision, then at most two fail-open re-routes


@dataclass
class RouterConfig:
    models: tuple[str, ...] = ()  # served model names; empty: accept any
    max_body_bytes: int = 16 << 20
    tokenizer: str | None = None
    scrape_interval_s: float = 1.0
    connect_timeout_s: float = 2.0
    upstream_timeout_s: float = 1800.0
    link_retry_s: float = 5.0


@dataclass(slots=True)
class _Call:
    """One request through the P/D flow; ``decision`` changes when a failure re-routes it."""

    request: web.Request
    kind: Kind
    body: dict[str, Any]
    prompt: Prompt
    tokens: PromptTokens
    decision: Decision
    rid: str
    arrived: float  # monotonic


class _UpstreamError(Exception):
    """A phase that failed upstream; ``kv`` marks a KVCache that did not arrive."""

    def __init__(self, message: str, kv: bool = False) -> None:
        super().__init__(message)
        self.kv = kv


class RouterServer:
    def __init__(self, cfg: RouterConfig, fleet: Fleet | None = None) -> None:
        self.cfg = cfg
        self.fleet = fleet or Fleet(link_retry_s=cfg.link_retry_s)
        self.metrics = RouterMetrics()
        self.counter = Counter(cfg.tokenizer)
        self.session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- policy ------------------------------------------------------------------------------
    def set_policy(self, policy: RoutingPolicy) -> None:
        old = self.fleet.policy
        bad = self.fleet.apply(policy)
        for url in bad:
            log.error("policy v%d: ignoring endpoint %r (not an http(s) URL)", policy.version, url)
        if old is None or old.version != policy.version:
            log.info(
                "policy v%d: threshold %s, %d local prefill, %d decode, pools %s",
                policy.version,
                policy.threshold_tokens,
                len(policy.prefill_endpoints),
                len(policy.decode_endpoints),
                {p.name: len(p.endpoints) for p in policy.pools},
            )
        telemetry.export(self.fleet, self.metrics)

    # -- app ---------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_body_bytes)
        add_openai_routes(app, self._serve)
        app.router.add_post("/v1/route", self._route)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", metrics_handler(self.metrics.registry))
        app.router.add_get("/policy", self._policy)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _: web.Application) -> None:
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.cfg.connect_timeout_s,
            sock_read=self.cfg.upstream_timeout_s,
        )
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(
            timeout=timeout, connector=connector, auto_decompress=False
        )
        self._tasks.append(
            asyncio.create_task(
                telemetry.run(self.fleet, self.metrics, self.session, self.cfg.scrape_interval_s)
            )
        )

    async def _stop(self, _: web.Application) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        if self.session is not None:
            await self.session.close()

    # -- request parsing ---------------------------------------------------------------------
    async def _parse(self, request: web.Request, kind: Kind) -> tuple[dict[str, Any], Prompt]:
        body = await read_json(request)
        prompt = openai.parse(kind, body)
        if self.cfg.models and prompt.model is not None and prompt.model not in self.cfg.models:
            raise RequestError(
                404, f"model {prompt.model!r} not served here (have: "
                f"{', '.join(self.cfg.models)})", "model_not_found",
            )  # fmt: skip
        if self.fleet.policy is None:
            raise RequestError(503, "no routing policy yet", "no_policy")
        return body, prompt

    async def _decide(self, prompt: Prompt) -> tuple[PromptTokens, Decision]:
        t0 = time.perf_counter()
        pt = await self.counter.count_async(prompt)
        d = self.fleet.core.route(pt.length, pt.hashes)
        self.metrics.decide_seconds.observe(time.perf_counter() - t0)
        if not pt.exact:
            self.metrics.approximate.inc()
        return pt, d

    # -- decision-only API -------------------------------------------------------------------
    async def _route(self, request: web.Request) -> web.Response:
        try:
            raw = await read_json(request)
            kind: Kind = "chat" if isinstance(raw, Mapping) and "messages" in raw else "completions"
            prompt = openai.parse(kind, raw)
            if self.fleet.policy is None:
                raise RequestError(503, "no routing policy yet", "no_policy")
        except RequestError as exc:
            return self._error(exc)
        pt, d = await self._decide(prompt)
        decode = self.fleet.pick_decode()
        target = _target_name(d)
        self.metrics.decisions.labels(target, d.reason.value).inc()
        return json_response(
            {
                "prefill": None if d.target == Target.REJECT else self.fleet.prefill_url(d),
                "decode": None if decode is None else decode.url,
                "target": target,
                "pool": self._pool_name(d),
                "reason": d.reason.value,
                "promptTokens": pt.length,
                "cachedTokens": d.cached_tokens,
                "uncachedTokens": d.uncached_tokens,
                "thresholdTokens": d.threshold_tokens,
                "policyVersion": d.policy_version,
                "exactTokenCount": pt.exact,
            }
        )

    def _pool_name(self, d: Decision) -> str | None:
        if d.target != Target.POOL or self.fleet.policy is None:
            return None
        return self.fleet.policy.pools[d.pool].name

    # -- the P/D flow ------------------------------------------------------------------------
    async def _serve(self, request: web.Request, kind: Kind) -> web.StreamResponse:
        arrived = time.monotonic()
        try:
            body, prompt = await self._parse(request, kind)
        except RequestError as exc:
            return self._error(exc)
        pt, d = await self._decide(prompt)
        rid = request.headers.get("X-Request-ID") or f"prfaas-{uuid.uuid4().hex}"
        try:
            return await self._pd(_Call(request, kind, body, prompt, pt, d, rid, arrived))
        except RequestError as exc:
            return self._error(exc)

    async def _pd(self, call: _Call) -> web.StreamResponse:
        for _ in range(_MAX_ATTEMPTS):
            if call.decision.target == Target.REJECT:
                raise RequestError(503, "no healthy prefill instance", "no_prefill")
            decode = self.fleet.pick_decode()
            if decode is None:
                raise RequestError(503, "no healthy decode instance", "no_decode")
            kvp = await self._prefill_phase(call)
            if kvp is None:
                continue  # the pool failed: re-routed
            if not self.fleet.routes_to(decode):  # it left while prefill ran: no new work
                decode = self.fleet.pick_decode()  # for an engine that is gone or draining
                if decode is None:
                    raise RequestError(503, "no healthy decode instance", "no_decode")
            try:
                return await self._decode_phase(call, decode, kvp)
            except _UpstreamError as exc:
                d = call.decision
                if not (exc.kv and d.target == Target.POOL):
                    raise RequestError(502, f"decode failed: {exc}", "decode_failed") from None
                log.warning("%s: KV transfer over the link failed (%s); serving it locally",
                            call.rid, exc)  # fmt: skip
                self.fleet.link_failed(d.pool)
                self._reroute(call, "link")
        raise RequestError(502, "no prefill target left after failures", "prefill_failed")

    def _reroute(self, call: _Call, cause: str) -> None:
        self.metrics.fallbacks.labels(cause).inc()
        call.decision = self.fleet.core.route(call.tokens.length, call.tokens.hashes)

    async def _prefill_phase(self, call: _Call) -> dict[str, Any] | None:
        """Phase 1 on the decided target: its ``kv_transfer_params``, or None when a pool
        failed and the request was re-routed."""
        d, pt = call.decision, call.tokens
        url = self.fleet.prefill_url(d)
        t0 = time.monotonic()
        try:
            with self.fleet.in_flight(d, pt.hashes, pt.length):
                kvp = await self._prefill(url, call)
        except _UpstreamError as exc:
            self.fleet.engine_failed(url)
            if d.target != Target.POOL:
                raise RequestError(502, f"prefill failed: {exc}", "prefill_failed") from None
            log.warning("%s: pool prefill failed (%s); serving it locally", call.rid, exc)
            self._reroute(call, "pool")
            return None
        self.metrics.phase.labels("prefill").observe(time.monotonic() - t0)
        return kvp

    async def _prefill(self, url: str, call: _Call) -> dict[str, Any]:
        assert self.session is not None
        req = {k: v for k, v in call.body.items() if k != "stream_options"}
        req.update(stream=False, max_tokens=1, kv_transfer_params={"do_remote_decode": True})
        if "max_completion_tokens" in req:
            req["max_completion_tokens"] = 1
        try:
            async with self.session.post(url + _PATHS[call.kind], data=orjson.dumps(req),
                                         headers=_hdr(call.rid)) as r:  # fmt: skip
                if r.status != 200:
                    raise _UpstreamError(f"{url} answered {r.status}: {(await r.text())[:200]}")
                out = orjson.loads(await r.read())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise _UpstreamError(f"{url}: {exc or type(exc).__name__}") from None
        kvp = out.get("kv_transfer_params") if isinstance(out, dict) else None
        return kvp if isinstance(kvp, dict) else {}

    async def _decode_phase(
        self, call: _Call, decode: Engine, kvp: dict[str, Any]
    ) -> web.StreamResponse:
        """Phase 2 on ``decode``, relayed to the client; ``_UpstreamError`` if decode fails to
        answer (``kv``: the KVCache did not arrive)."""
        d, m = call.decision, self.metrics
        nominal = _int(kvp.get("prfaas_kv_bytes"))
        if d.target == Target.POOL:
            m.link_bytes.labels(self._pool_name(d)).inc(nominal)
        with decode:  # in flight there until the answer is relayed
            with self.fleet.core.kv_in_flight(d, nominal):
                resp = await self._decode_start(call, decode, kvp)
            if resp.status >= 500:
                text = await resp.text()
                resp.release()
                raise _UpstreamError(f"{decode.url} answered {resp.status}: {text[:200]}",
                                     kv="kv_transfer_failed" in text)  # fmt: skip
            m.requests.labels(_target_name(d), d.reason.value).inc()
            m.uncached.observe(d.uncached_tokens)
            m.output.observe(call.prompt.max_tokens)
            return await self._relay(call, resp)

    async def _decode_start(
        self, call: _Call, decode: Engine, kvp: dict[str, Any]
    ) -> aiohttp.ClientResponse:
        """Send phase 2; returns once decode answers (its headers mean the KVCache arrived)."""
        assert self.session is not None
        req = dict(call.body)
        if kvp:
            req["kv_transfer_params"] = kvp
        t0 = time.monotonic()
        try:
            resp = await self.session.post(
                decode.url + _PATHS[call.kind], data=orjson.dumps(req), headers=_hdr(call.rid)
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.fleet.engine_failed(decode.url)
            raise _UpstreamError(f"{decode.url}: {exc or type(exc).__name__}") from None
        self.metrics.phase.labels("kv_and_queue").observe(time.monotonic() - t0)
        return resp

    async def _relay(self, call: _Call, resp: aiohttp.ClientResponse) -> web.StreamResponse:
        d = call.decision
        headers = {
            "Content-Type": resp.headers.get("Content-Type", "application/json"),
            "X-Request-ID": call.rid,
            "X-PrfaaS-Prefill": _target_name(d),
            "X-PrfaaS-Reason": d.reason.value,
        }
        t0 = time.monotonic()
        if not headers["Content-Type"].startswith("text/event-stream"):
            try:  # a JSON answer: one read, one write (no chunked relay)
                body = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                resp.close()
                raise RequestError(502, f"decode failed: {exc}", "decode_failed") from None
            resp.release()
            self.metrics.ttft.observe(time.monotonic() - call.arrived)
            self.metrics.phase.labels("decode").observe(time.monotonic() - t0)
            return web.Response(body=body, status=resp.status, headers=headers)
        out = web.StreamResponse(status=resp.status, headers=headers)
        done = False
        try:
            first = True
            async for chunk in resp.content.iter_any():
                if first:
                    await out.prepare(call.request)
                    self.metrics.ttft.observe(time.monotonic() - call.arrived)
                    first = False
                await out.write(chunk)
            if first:
                await out.prepare(call.request)
            await out.write_eof()
            done = True
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("%s: decode stream broke: %s", call.rid, exc or type(exc).__name__)
            self.metrics.errors.labels("decode_stream").inc()
        finally:
            if done:
                resp.release()
            else:
                resp.close()  # client gone or upstream broken: drop the decode connection
        self.metrics.phase.labels("decode").observe(time.monotonic() - t0)
        return out

    # -- the rest ----------------------------------------------------------------------------
    def _error(self, exc: RequestError) -> web.Response:
        self.metrics.errors.labels(exc.code).inc()
        return error_response(exc)

    async def _models(self, _: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "owned_by": "prfaas"} for m in self.cfg.models]
        return json_response({"object": "list", "data": data})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def _readyz(self, _: web.Request) -> web.Response:
        if self.fleet.policy is None:
            return json_response({"ready": False, "reason": "no routing policy yet"}, status=503)
        if self.fleet.pick_decode() is None:
            return json_response({"ready": False, "reason": "no healthy decode"}, status=503)
        return json_response({"ready": True, "policyVersion": self.fleet.policy.version})

    async def _policy(self, _: web.Request) -> web.Response:
        fleet = self.fleet
        if fleet.policy is None:
            return json_response({"policy": None})
        p = fleet.policy
        pools = []
        for route, ps in zip(p.pools, fleet.core.live.pools, strict=True):
            pools.append({
                "name": route.name, "endpoints": list(route.endpoints),
                "linkUp": ps.link.healthy, "linkUtilisation": ps.link.utilisation(),
                "mode": ps.mode.name.lower(),
                "thresholdTokens": None if p.threshold_tokens is None
                else ps.threshold(p.threshold_tokens),
            })  # fmt: skip
        return json_response({
            "version": p.version, "thresholdTokens": p.threshold_tokens, "pools": pools,
            "prefillEndpoints": list(p.prefill_endpoints),
            "decodeEndpoints": list(p.decode_endpoints),
            "engines": fleet.endpoint_states(),
        })  # fmt: skip


def _target_name(d: Decision) -> str:
    return {Target.POOL: "pool", Target.LOCAL: "local"}.get(d.target, "rejected")


def _hdr(rid: str) -> dict[str, str]:
    return {"X-Request-ID": rid, "Content-Type": JSON}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


async def run(server: RouterServer, host: str, port: int) -> None:
    runner = web.AppRunner(server.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
