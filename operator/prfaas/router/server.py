"""The router's HTTP front: the P/D flow per request, the decision API, health and metrics.

Per request: parse (400/404/413) → count tokens and hash prefix blocks → ``decide`` → phase 1,
prefill with ``max_tokens: 1`` and ``kv_transfer_params.do_remote_decode`` on the chosen
target → phase 2, the original body plus what prefill returned, on the least loaded decode
engine (picked when phase 2 starts, counted from the pick); its answer is relayed as it comes
(SSE events are written as they arrive). This is vLLM's two-phase hand-off, so real vLLM
engines with a KV connector fit too.

Failures, while nothing has reached the client (``_MAX_PREFILLS`` prefills and
``_MAX_DECODES`` decode attempts per request at most):

- a prefill that fails or outlives its bound (``deadline.PhaseBudget``): the engine is marked
  unhealthy until it answers a scrape, the request is re-routed (a pool that timed out: local);
- a decode that cannot start (refused, 5xx, cut before its first byte): another healthy decode
  engine, same KVCache;
- a KVCache that does not arrive (decode answers ``kv_transfer_failed``) or arrives too late:
  prefilled again locally; a pool's link is avoided until a probe carries KV over it again.

After the first byte of a stream has reached the client nothing can be retried: a stream that
breaks, or ends without ``[DONE]``, gets an error event and no ``[DONE]``
(``prfaas_router_broken_streams_total``). A client that goes away cancels the upstream requests
(the front cancels its handler: ``front.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from prfaas.router import front, handoff, telemetry
from prfaas.router.auth import ApiKeys
from prfaas.router.deadline import Deadline, PhaseBudget, PhaseTimeoutError
from prfaas.router.fleet import Engine, Fleet
from prfaas.router.front import (
    JSON,
    App,
    FrontLimits,
    Reply,
    Request,
    Response,
    error_response,
    json_response,
)
from prfaas.router.limits import Gate, Limits, json_depth
from prfaas.router.metrics import RouterMetrics
from prfaas.router.upstream import EngineCallError, UpstreamClient, UpstreamResponse
from prfaas.routing.decide import Decision, Target
from prfaas.routing.policy import Handoff, RoutingPolicy
from prfaas.routing.tokens import PromptTokens
from prfaas.serving import openai
from prfaas.serving.openai import Kind, Prompt, RequestError
from prfaas.serving.tokenizer import Counter

log = logging.getLogger("prfaas.router")
_PATHS: dict[Kind, str] = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
_MAX_PREFILLS = 3  # the decision, then at most two re-routes after failures
_MAX_DECODES = 3  # decode attempts per request, each on another engine if there is one


@dataclass
class RouterConfig:
    models: tuple[str, ...] = ()  # served model names; empty: accept any
    max_body_bytes: int = 16 << 20
    tokenizer: str | None = None
    scrape_interval_s: float = 1.0
    connect_timeout_s: float = 2.0
    upstream_timeout_s: float = 1800.0
    link_retry_s: float = 1.0  # between probes of a failed link
    probe_timeout_s: float = 5.0
    budget: PhaseBudget | None = None  # phase bounds; None: only the upstream timeouts
    limits: Limits = field(default_factory=Limits)
    api_keys: ApiKeys | None = None  # None: the OpenAI routes are open
    pdcluster: str | None = None  # "namespace/name": the label on every metric series


@dataclass(slots=True)
class _Call:
    """One request through the P/D flow; ``decision`` changes when a failure re-routes it."""

    request: Request
    kind: Kind
    body: dict[str, Any]
    prompt: Prompt
    tokens: PromptTokens
    decision: Decision
    rid: str
    arrived: float  # monotonic
    prefills: int = 0
    decodes: int = 0
    avoid: list[str] = field(default_factory=list)  # decode engines that failed it
    kv_spent: bool = False  # a failed decode attempt may have taken the KVCache
    counted: bool = False


class _UpstreamError(Exception):
    """A phase that failed upstream before anything reached the client. ``kv``: the KVCache
    did not arrive; ``late``: over its bound; ``reached``: the decode engine took the request."""

    def __init__(
        self, message: str, kv: bool = False, late: bool = False, reached: bool = False
    ) -> None:
        super().__init__(message)
        self.kv = kv
        self.late = late
        self.reached = reached


class _Events:
    """SSE bytes as they arrive, passed on in whole events only (up to the last blank line), so
    a stream cut mid-event never leaves half an event before the error event; ``done`` once the
    last event passed on is ``[DONE]``."""

    __slots__ = ("_held", "done")

    def __init__(self) -> None:
        self._held = b""
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        buf = self._held + chunk if self._held else chunk
        lf, crlf = buf.rfind(b"\n\n"), buf.rfind(b"\r\n\r\n")
        cut = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
        out, self._held = buf[:cut], buf[cut:]
        if out:
            self.done = out.rstrip().endswith(b"data: [DONE]")
        return out

    def flush(self) -> bytes:
        """What is held at the end of the stream (an event without its blank line)."""
        out, self._held = self._held, b""
        if out.strip():
            self.done = out.rstrip().endswith(b"data: [DONE]")
        return out


class RouterServer:
    def __init__(self, cfg: RouterConfig, fleet: Fleet | None = None) -> None:
        self.cfg = cfg
        self.fleet = fleet or Fleet(link_retry_s=cfg.link_retry_s)
        self.metrics = RouterMetrics(cfg.pdcluster)
        self.counter = Counter(cfg.tokenizer)
        self.session: aiohttp.ClientSession | None = None  # engines' /metrics scrapes
        self.upstream: UpstreamClient | None = None  # every POST to an engine
        self._tasks: list[asyncio.Task[None]] = []
        self._model: str | None = None  # the last model a client named
        self._probes = 0
        self.gate = Gate(cfg.limits.max_concurrency)
        if not self.metrics.multiprocess:
            self.metrics.in_flight.set_function(lambda: self.gate.active)
        # per-request costs kept out of the hot path: a request ID is this process's random
        # prefix and a counter (uuid4 is a getrandom call), label children are looked up once
        self._rids = itertools.count()
        self._rid_prefix = f"prfaas-{uuid.uuid4().hex[:16]}-"
        self._phase = {p: self.metrics.phase.labels(p) for p in ("prefill", "kv_and_queue",
                                                                  "decode")}  # fmt: skip

    # -- policy ------------------------------------------------------------------------------
    def set_policy(self, policy: RoutingPolicy) -> None:
        old = self.fleet.policy
        bad = self.fleet.apply(policy)
        for url, why in bad:
            reason = "not an http(s) URL" if why == "invalid" else "not in --allow-endpoint"
            log.error("policy v%d: ignoring endpoint %r (%s)", policy.version, url, reason)
        for why in ("invalid", "not_allowed"):
            self.metrics.refused.labels(why).set(sum(1 for _, w in bad if w == why))
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

    # -- apps --------------------------------------------------------------------------------
    def app(self) -> App:
        """The client-facing app: the OpenAI routes and the decision API (behind the API keys
        and the concurrency gate), health and metrics. No engine URL is ever in an answer."""
        routes = front.Routes()
        routes.add("POST", "/v1/completions", self._completions)
        routes.add("POST", "/v1/chat/completions", self._chat)
        routes.add("POST", "/v1/route", self._route)
        routes.add("GET", "/v1/models", self._models)
        routes.add("GET", "/healthz", self._healthz)
        routes.add("GET", "/readyz", self._readyz)
        routes.add("GET", "/metrics", self._metrics)
        return self._answering(routes, guarded=True)

    def admin_app(self) -> App:
        """The admin app (``--admin-port``, bound to loopback by default): ``/policy`` and a
        decision API that names the engines (for a gateway sidecar that proxies itself)."""
        routes = front.Routes()
        routes.add("GET", "/policy", self._policy)
        routes.add("POST", "/v1/route", self._route_admin)
        routes.add("GET", "/healthz", self._healthz)
        return self._answering(routes, guarded=False)

    def _answering(self, routes: front.Routes, guarded: bool) -> App:
        """``routes`` as an app: every error an OpenAI-style answer, counted; any failure a
        client input could still cause a logged 500, never a traceback to the client."""

        async def answer(request: Request) -> Reply:
            try:
                handler = routes.find(request)
                return await (self._guard(request, handler) if guarded else handler(request))
            except RequestError as exc:
                return self._error(exc)
            except Exception:  # a bug, not the client's fault
                log.exception("unexpected error on %s", request.path)
                return self._error(RequestError(500, "internal error", "internal_error"))

        return answer

    async def _guard(self, request: Request, handler: front.Handler) -> Reply:
        """API keys and the concurrency cap on ``/v1/*``."""
        if not request.path.startswith("/v1/"):
            return await handler(request)
        keys = self.cfg.api_keys
        if keys is not None and not keys.allows(request.headers.get("authorization")):
            raise RequestError(401, "missing or invalid API key (Authorization: Bearer <key>)",
                               "invalid_api_key")  # fmt: skip
        if request.path == "/v1/models":
            return await handler(request)
        if not self.gate.enter():
            raise RequestError(
                429, f"over {self.gate.limit} requests in flight here; retry later",
                "too_many_requests", {"Retry-After": str(self.cfg.limits.retry_after_s)},
            )  # fmt: skip
        if self.metrics.multiprocess:  # else read at each scrape (set_function)
            self.metrics.in_flight.set(self.gate.active)
        try:
            return await handler(request)
        finally:
            self.gate.leave()
            if self.metrics.multiprocess:
                self.metrics.in_flight.set(self.gate.active)

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.cfg.connect_timeout_s,
            sock_read=self.cfg.upstream_timeout_s,
        )
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(
            timeout=timeout, connector=connector, auto_decompress=False
        )
        self.upstream = UpstreamClient(self.cfg.connect_timeout_s, self.cfg.upstream_timeout_s)
        self._tasks.append(
            asyncio.create_task(
                telemetry.run(
                    self.fleet,
                    self.metrics,
                    self.session,
                    self.cfg.scrape_interval_s,
                    self._probe_link,
                )
            )
        )

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        if self.session is not None:
            await self.session.close()
        if self.upstream is not None:
            self.upstream.close()

    # -- request parsing ---------------------------------------------------------------------
    async def _read(self, request: Request) -> Any:
        lim = self.cfg.limits
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise RequestError(400, "request body is not valid JSON", "invalid_json") from None
        # counting brackets in C spares most bodies the walk
        deep = raw.count(b"[") + raw.count(b"{") > lim.max_json_depth
        if deep and json_depth(body, lim.max_json_depth) > lim.max_json_depth:
            raise RequestError(400, f"request body nested deeper than {lim.max_json_depth} "
                               "levels", "json_too_deep")  # fmt: skip
        return body

    def _check(self, prompt: Prompt) -> None:
        limit = self.cfg.limits.max_tokens
        if prompt.max_tokens > limit:
            raise RequestError(400, f"max_tokens {prompt.max_tokens} is over this router's "
                               f"limit of {limit}", "max_tokens_too_large")  # fmt: skip

    async def _parse(self, request: Request, kind: Kind) -> tuple[dict[str, Any], Prompt]:
        body = await self._read(request)
        prompt = openai.parse(kind, body)
        self._check(prompt)
        if self.cfg.models and prompt.model is not None and prompt.model not in self.cfg.models:
            raise RequestError(
                404, f"model {prompt.model!r} not served here (have: "
                f"{', '.join(self.cfg.models)})", "model_not_found",
            )  # fmt: skip
        if self.fleet.policy is None:
            raise RequestError(503, "no routing policy yet", "no_policy")
        return body, prompt

    async def _decide(self, prompt: Prompt) -> tuple[PromptTokens, Decision]:
        """Count, look up and decide; 400 for a prompt over ``--max-prompt-tokens``."""
        t0 = time.perf_counter()
        pt = await self.counter.count_async(prompt)
        limit = self.cfg.limits.max_prompt_tokens
        if pt.length > limit:
            raise RequestError(400, f"prompt of {pt.length} tokens is over this router's "
                               f"limit of {limit}", "prompt_too_long")  # fmt: skip
        d = self.fleet.core.route(pt.length, pt.hashes)
        self.metrics.decide_seconds.observe(time.perf_counter() - t0)
        if not pt.exact:
            self.metrics.approximate.inc()
        return pt, d

    # -- decision-only API -------------------------------------------------------------------
    async def _route(self, request: Request) -> Response:
        return await self._route_answer(request, urls=False)

    async def _route_admin(self, request: Request) -> Response:
        return await self._route_answer(request, urls=True)

    async def _route_answer(self, request: Request, urls: bool) -> Response:
        """The decision for a request; the engines' URLs only on the admin port (``urls``)."""
        raw = await self._read(request)
        kind: Kind = "chat" if isinstance(raw, Mapping) and "messages" in raw else "completions"
        prompt = openai.parse(kind, raw)
        self._check(prompt)
        if self.fleet.policy is None:
            raise RequestError(503, "no routing policy yet", "no_policy")
        pt, d = await self._decide(prompt)
        target = _target_name(d)
        self.metrics.decisions.labels(target, d.reason.value).inc()
        where: dict[str, str | None] = {}
        if urls:
            decode = self.fleet.pick_decode()
            where["prefill"] = None if d.target == Target.REJECT else self.fleet.prefill_url(d)
            where["decode"] = None if decode is None else decode.url
        return json_response(
            {
                **where,
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
    async def _completions(self, request: Request) -> Reply:
        return await self._serve(request, "completions")

    async def _chat(self, request: Request) -> Reply:
        return await self._serve(request, "chat")

    async def _serve(self, request: Request, kind: Kind) -> Reply:
        arrived = time.monotonic()
        body, prompt = await self._parse(request, kind)
        pt, d = await self._decide(prompt)
        if prompt.model is not None:
            self._model = prompt.model  # link probes name a model the engines serve
        rid = request.headers.get("x-request-id") or f"{self._rid_prefix}{next(self._rids):x}"
        return await self._pd(_Call(request, kind, body, prompt, pt, d, rid, arrived))

    async def _pd(self, call: _Call) -> Reply:
        while call.prefills < _MAX_PREFILLS:
            d = call.decision
            if d.target == Target.REJECT:
                raise RequestError(503, "no healthy prefill instance", "no_prefill")
            if not self.fleet.has_decode():
                raise RequestError(503, "no healthy decode instance", "no_decode")
            call.prefills += 1
            url = self.fleet.prefill_url(d)
            source = self.fleet.engines[url]
            pairing = handoff.pairing(url, self.fleet.handoff(d))
            if pairing is not None:  # SGLang: prefill and decode at once
                out = await self._paired(call, source, pairing)
            elif (kvp := await self._prefill_phase(call)) is not None:
                out = await self._decode_phase(call, kvp, source)
            else:
                continue  # failed: re-routed
            if out is not None:
                return out  # else the KVCache was lost: prefill again, locally
        raise RequestError(502, "no prefill target left after failures", "prefill_failed")

    async def _paired(self, call: _Call, source: Engine, pairing: dict[str, Any]) -> Reply | None:
        """SGLang's hand-off: the request to prefill and to a decode engine at once, paired by
        ``bootstrap_room``. Prefill failed or late: the decode is cancelled and the call re-routed
        (as under vLLM); a decode that cannot start: the pair again on another decode engine
        (its KVCache waits under a room nobody pulls, and expires); None: try again."""
        decode = self.fleet.pick_decode(call.avoid)
        if decode is None:
            raise RequestError(503, "no healthy decode instance", "no_decode")
        call.decodes += 1
        with decode:
            fields = handoff.decode_fields({}, pairing)
            started = asyncio.create_task(self._decode_start(call, decode, fields, source, True))
            try:
                answer = await self._prefill_phase(call, pairing)
            except BaseException:  # the request's own fault (4xx), or the client went away
                await _cancelled(started)
                raise
            if answer is None:
                await _cancelled(started)
                return None
            return await self._decoded(call, decode, started, handoff.kv_bytes(answer))

    async def _decoded(
        self,
        call: _Call,
        decode: Engine,
        started: asyncio.Task[tuple[UpstreamResponse, bytes]],
        nominal: int,
    ) -> Reply | None:
        """The decode half of an SGLang pair, once prefill answered: its KVCache on the link
        until the first byte, then relayed."""
        d = call.decision
        if d.target == Target.POOL:
            self.metrics.link_bytes.labels(self._pool_name(d)).inc(nominal)
        try:
            with self.fleet.core.kv_in_flight(d, nominal):
                resp, first = await started
        except _UpstreamError as exc:
            if not (exc.kv or exc.late):
                call.avoid.append(decode.url)
                self.metrics.decode_retries.inc()
                log.warning("%s: decode failed before the answer (%s); the pair again",
                            call.rid, exc)  # fmt: skip
                if call.decodes >= _MAX_DECODES:
                    raise RequestError(502, f"decode failed on {call.decodes} engines",
                                       "decode_failed") from None  # fmt: skip
                call.prefills -= 1  # the prefill did not fail: not one of its attempts
                return None
            self._kv_lost(call, exc)
            return None
        self._count(call)
        return await self._relay(call, resp, first)

    def _reroute(self, call: _Call, cause: str, local: bool = False) -> None:
        """A new decision after a failure; ``local``: fail open to a PD-P instance. The last
        attempt is always local: pool engines that die together (a pool scaled down, a
        datacenter lost) must not use up every attempt before the EndpointSlices catch up."""
        self.metrics.fallbacks.labels(cause).inc()
        core, pt = self.fleet.core, call.tokens
        local = local or call.prefills >= _MAX_PREFILLS - 1
        call.decision = (
            core.route_local(pt.length, pt.hashes) if local else core.route(pt.length, pt.hashes)
        )

    async def _prefill_phase(
        self, call: _Call, pairing: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Prefill on the decided target: what its answer gives decode (``handoff``), or None
        when it failed (the engine is marked unhealthy until it answers a scrape) and the call
        was re-routed."""
        d, pt = call.decision, call.tokens
        url = self.fleet.prefill_url(d)
        pool = d.target == Target.POOL
        budget = self._prefill_budget(d, self.fleet.engines[url])
        t0 = time.monotonic()
        try:
            with self.fleet.in_flight(d, pt.hashes, pt.length):  # the core's load + the engine's
                kvp = await self._prefill(url, call, budget, pairing)
        except _UpstreamError as exc:
            self.fleet.engine_failed(url)
            if exc.late:
                self.metrics.timeouts.labels("prefill").inc()
            where = "pool" if pool else "local"
            log.warning("%s: %s prefill failed (%s); re-routing", call.rid, where, exc)
            self._reroute(call, where, local=pool and exc.late)
            return None
        self._phase["prefill"].observe(time.monotonic() - t0)
        return kvp

    def _prefill_budget(self, d: Decision, engine: Engine) -> float:
        if self.cfg.budget is None:
            return math.inf
        pool, ahead = d.target == Target.POOL, self._instance_load(d)
        return self.cfg.budget.prefill_s(pool, d.uncached_tokens, ahead, engine.active)

    def _instance_load(self, d: Decision) -> float:
        """Uncached tokens this router already has in flight on ``d``'s instance."""
        live = self.fleet.core.live
        target = live.pools[d.pool].target if d.target == Target.POOL else live.local
        return target.instances[d.instance].load

    async def _prefill(
        self, url: str, call: _Call, budget: float, pairing: dict[str, Any] | None
    ) -> dict[str, Any]:
        assert self.upstream is not None
        req = handoff.prefill_body(call.body, pairing)
        engine = self.fleet.engines[url]
        try:
            with Deadline(budget) as dl, engine.watching(dl.expire):
                path, hdr = url + _PATHS[call.kind], _hdr(call.rid)
                status, raw = await self.upstream.call(path, orjson.dumps(req), hdr)
            if 400 <= status < 500:  # the request's fault: the client's answer
                raise _client_error(status, raw)
            if status != 200:
                raise _UpstreamError(f"{url} answered {status}: {_text(raw)}")
            out = orjson.loads(raw)
        except PhaseTimeoutError as exc:
            raise _UpstreamError(f"{url}: {exc}", late=True) from None
        except (EngineCallError, TimeoutError, ValueError) as exc:
            raise _UpstreamError(f"{url}: {exc or type(exc).__name__}") from None
        return handoff.after_prefill(out, pairing)

    async def _decode_phase(self, call: _Call, kvp: dict[str, Any], source: Engine) -> Reply | None:
        """Phase 2, relayed to the client. A decode engine that cannot start the answer (refused,
        5xx, broken before anything reached the client) is replaced by another, with the same
        KVCache; None when the KVCache is lost or late (the call was re-routed to local)."""
        d = call.decision
        nominal = handoff.kv_bytes(kvp)
        call.kv_spent = False  # a fresh KVCache
        while call.decodes < _MAX_DECODES:
            decode = self.fleet.pick_decode(call.avoid)
            if decode is None:
                raise RequestError(503, "no healthy decode instance", "no_decode")
            call.decodes += 1
            if d.target == Target.POOL:
                self.metrics.link_bytes.labels(self._pool_name(d)).inc(nominal)
            with decode:  # in flight there from the pick until the answer is relayed
                try:
                    with self.fleet.core.kv_in_flight(d, nominal):
                        fields = handoff.decode_fields(kvp, None)
                        resp, first = await self._decode_start(call, decode, fields, source)
                except _UpstreamError as exc:
                    if not (exc.kv or exc.late):
                        call.kv_spent = call.kv_spent or exc.reached
                        call.avoid.append(decode.url)
                        self.metrics.decode_retries.inc()
                        log.warning("%s: decode failed before the answer (%s); another engine",
                                    call.rid, exc)  # fmt: skip
                        continue
                    self._kv_lost(call, exc)
                    return None
                self._count(call)
                return await self._relay(call, resp, first)
        raise RequestError(502, f"decode failed on {call.decodes} engines", "decode_failed")

    def _kv_lost(self, call: _Call, exc: _UpstreamError) -> None:
        d = call.decision
        if exc.late:
            self.metrics.timeouts.labels("first_byte").inc()
            cause = "timeout"
        elif d.target == Target.POOL and not call.kv_spent:
            self.fleet.link_failed(d.pool)  # probed until it carries KV again
            cause = "link"
        else:
            cause = "kv"  # a decode before may have taken it
        log.warning("%s: KVCache %s (%s); prefilling it locally", call.rid,
                    "late" if exc.late else "lost", exc)  # fmt: skip
        self._reroute(call, cause, local=True)

    async def _decode_start(
        self,
        call: _Call,
        decode: Engine,
        fields: dict[str, Any],
        source: Engine,
        with_prefill: bool = False,
    ) -> tuple[UpstreamResponse, bytes]:
        """Send decode its request (the client's body plus ``fields``) and wait for the first
        byte of the answer (a stream's first chunk, a JSON answer whole) within the budget
        (``with_prefill``: sent with the prefill, so its bound too); the wait ends early if
        either engine hangs."""
        assert self.upstream is not None
        req = {**call.body, **fields}
        budget, slots = self._first_byte_budget(call)
        if with_prefill and self.cfg.budget is not None:
            budget += self._prefill_budget(call.decision, source)
        was = [False]

        def queued() -> bool:
            """Alive and full: a slot will come, wait another period (and one more after the
            queue clears: the request admitted last needs its first step)."""
            now = decode.healthy and (decode.waiting > 0 or decode.active > slots)
            grant, was[0] = now or was[0], now
            return grant

        t0 = time.monotonic()
        resp: UpstreamResponse | None = None
        try:
            with (
                Deadline(budget, queued) as dl,
                decode.watching(dl.expire),
                source.watching(dl.expire),
            ):
                resp = await self.upstream.post(
                    decode.url + _PATHS[call.kind], orjson.dumps(req), _hdr(call.rid)
                )
                self._phase["kv_and_queue"].observe(time.monotonic() - t0)
                if resp.status >= 500:
                    raw = await resp.read()
                    raise _UpstreamError(f"{decode.url} answered {resp.status}: {_text(raw)}",
                                         kv=b"kv_transfer_failed" in raw, reached=True)  # fmt: skip
                if _is_sse(resp):
                    first = await resp.readany()
                    if not first:
                        raise _UpstreamError(f"{decode.url} ended the stream before a byte",
                                             reached=True)  # fmt: skip
                else:
                    first = await resp.read()
                return resp, first
        except PhaseTimeoutError as exc:
            _drop(resp)
            raise _UpstreamError(f"{decode.url}: {exc}", late=True, reached=True) from None
        except _UpstreamError:
            _drop(resp)
            raise
        except (EngineCallError, TimeoutError) as exc:
            _drop(resp)
            self.fleet.engine_failed(decode.url)
            reached = not isinstance(exc, EngineCallError) or exc.reached  # connected: may have
            raise _UpstreamError(f"{decode.url}: {exc or type(exc).__name__}",
                                 reached=reached) from None  # fmt: skip
        except BaseException:
            _drop(resp)
            raise

    def _first_byte_budget(self, call: _Call) -> tuple[float, int]:
        b = self.cfg.budget
        if b is None:
            return math.inf, 0
        d, kv_s = call.decision, 0.0
        if d.target == Target.POOL:  # inside kv_in_flight: its own bytes are in the backlog
            kv_s = self.fleet.core.live.pools[d.pool].link.backlog_seconds()
            kv_s = kv_s if math.isfinite(kv_s) else 0.0
        n = 1 if call.prompt.stream else call.prompt.max_tokens
        return b.first_byte_s(kv_s, n), b.max_batch

    def _count(self, call: _Call) -> None:
        """The request's routing metrics, once (what the operator plans from)."""
        if call.counted:
            return
        call.counted = True
        d, m = call.decision, self.metrics
        m.requests.labels(_target_name(d), d.reason.value).inc()
        m.uncached.observe(d.uncached_tokens)
        m.output.observe(call.prompt.max_tokens)

    async def _relay(self, call: _Call, resp: UpstreamResponse, first: bytes) -> Reply:
        """The answer to the client: a JSON answer as read; a stream event by event. A stream
        that breaks, or ends without ``[DONE]``, ends with an error event and no ``[DONE]``."""
        d = call.decision
        ctype = resp.content_type or JSON
        headers = {
            "X-Request-ID": call.rid,
            "X-PrfaaS-Prefill": _target_name(d),
            "X-PrfaaS-Reason": d.reason.value,
        }
        t0 = time.monotonic()
        self.metrics.ttft.observe(t0 - call.arrived)
        if not _is_sse(resp):
            resp.release()
            return Response(first, resp.status, ctype, headers)
        events = _Events()
        problem: str | None = None
        read = False
        try:
            out = await call.request.stream(resp.status, headers, ctype)
            await out.write(events.feed(first))
            async for chunk in resp.iter_any():
                data = events.feed(chunk)
                if data:
                    await out.write(data)
            read = True
            await out.write(events.flush())
            if not events.done:
                problem = "the decode engine ended the stream without [DONE]"
        except (EngineCallError, TimeoutError) as exc:
            problem = f"the decode stream broke: {exc or type(exc).__name__}"
        except ConnectionResetError:  # the client went away: nobody to end the stream for
            return out
        finally:
            if read:
                resp.release()
            else:
                resp.close()  # client gone or upstream broken: drop the decode connection
        if problem is not None:
            log.warning("%s: %s after the first byte; ending it with an error", call.rid, problem)
            self.metrics.broken_streams.inc()
            self.metrics.errors.labels("decode_stream").inc()
            err = openai.error_body(f"answer cut short: {problem}", "decode_failed", 502)
            await out.write(b"data: " + orjson.dumps(err) + b"\n\n")
        await out.end()
        self._phase["decode"].observe(time.monotonic() - t0)
        return out

    # -- link probes -------------------------------------------------------------------------
    async def _probe_link(self, name: str) -> None:
        """Whether the link of pool ``name`` carries KV again: a 1-token prefill on one of its
        healthy engines (in turn), its KVCache pulled by a decode engine. No client request is
        ever the probe."""
        fleet = self.fleet
        routes = fleet.policy.pools if fleet.policy is not None else ()
        route = next((p for p in routes if p.name == name), None)
        urls = route.endpoints if route is not None else ()
        engines = [fleet.engines[u] for u in urls if fleet.engines[u].healthy]
        decode = fleet.pick_decode()
        if route is None or not engines or decode is None:
            fleet.link_probed(name, False)  # nothing to probe with yet
            return
        engine = engines[self._probes % len(engines)]
        self._probes += 1
        try:
            async with asyncio.timeout(self.cfg.probe_timeout_s):
                ok = await self._probe_once(engine.url, decode.url, route.handoff)
        except (EngineCallError, TimeoutError, ValueError):
            ok = False
        self.metrics.link_probes.labels(name, "ok" if ok else "failed").inc()
        if ok:
            log.info("link to pool %s carries KV again (probed via %s)", name, engine.url)
        fleet.link_probed(name, ok)

    async def _probe_once(self, prefill: str, decode: str, how: Handoff) -> bool:
        assert self.upstream is not None
        body: dict[str, Any] = {"prompt": [0], "max_tokens": 1, "stream": False}
        model = self.cfg.models[0] if self.cfg.models else self._model
        if model is not None:
            body["model"] = model
        path, hdr = _PATHS["completions"], _hdr(f"prfaas-probe-{uuid.uuid4().hex[:12]}")
        pairing = handoff.pairing(prefill, how)

        async def post(url: str, req: dict[str, Any]) -> tuple[int, Any]:
            assert self.upstream is not None
            status, raw = await self.upstream.call(url + path, orjson.dumps(req), hdr)
            return status, orjson.loads(raw) if status == 200 else None

        if pairing is not None:  # SGLang: both at once; the KVCache crossed iff decode answers
            phase1 = handoff.prefill_body(body, pairing)
            both = await asyncio.gather(post(prefill, phase1), post(decode, {**body, **pairing}))
            return all(status == 200 for status, _ in both)
        status, out = await post(prefill, handoff.prefill_body(body, None))
        kvp = handoff.after_prefill(out, None) if status == 200 else {}
        if not kvp:
            return False
        status, _ = await post(decode, {**body, **handoff.decode_fields(kvp, None)})
        return status == 200

    # -- the rest ----------------------------------------------------------------------------
    def _error(self, exc: RequestError) -> Response:
        self.metrics.errors.labels(exc.code).inc()
        return error_response(exc)

    async def _models(self, _: Request) -> Response:
        data = [{"id": m, "object": "model", "owned_by": "prfaas"} for m in self.cfg.models]
        return json_response({"object": "list", "data": data})

    async def _healthz(self, _: Request) -> Response:
        return Response(b"OK", content_type="text/plain; charset=utf-8")

    async def _metrics(self, _: Request) -> Response:
        return Response(generate_latest(self.metrics.exposed()), content_type=CONTENT_TYPE_LATEST)

    async def _readyz(self, _: Request) -> Response:
        if self.fleet.policy is None:
            return json_response({"ready": False, "reason": "no routing policy yet"}, status=503)
        if not self.fleet.has_decode():
            return json_response({"ready": False, "reason": "no healthy decode"}, status=503)
        return json_response({"ready": True, "policyVersion": self.fleet.policy.version})

    async def _policy(self, _: Request) -> Response:
        fleet = self.fleet
        if fleet.policy is None:
            return json_response({"policy": None})
        p = fleet.policy
        pools = []
        for route, ps in zip(p.pools, fleet.core.live.pools, strict=True):
            pools.append({
                "name": route.name, "endpoints": list(route.endpoints),
                "protocol": route.handoff.protocol,
                "linkUp": ps.link.healthy, "linkUtilisation": ps.link.utilisation(),
                "linkInFlightBytes": ps.link.in_flight(),
                "linkLoadFrom": "router" if ps.link.reported is None else "pool",
                "mode": ps.mode.name.lower(),
                "thresholdTokens": None if p.threshold_tokens is None
                else ps.threshold(p.threshold_tokens),
            })  # fmt: skip
        return json_response({
            "version": p.version, "thresholdTokens": p.threshold_tokens, "pools": pools,
            "prefillEndpoints": list(p.prefill_endpoints),
            "prefillProtocol": p.prefill_handoff.protocol,
            "decodeEndpoints": list(p.decode_endpoints),
            "engines": fleet.endpoint_states(),
        })  # fmt: skip


def _target_name(d: Decision) -> str:
    return {Target.POOL: "pool", Target.LOCAL: "local"}.get(d.target, "rejected")


def _is_sse(resp: UpstreamResponse) -> bool:
    return resp.content_type.startswith("text/event-stream")


def _text(raw: bytes) -> str:
    return raw[:200].decode(errors="replace")


def _drop(resp: UpstreamResponse | None) -> None:
    if resp is not None:
        resp.close()


def _client_error(status: int, raw: bytes) -> RequestError:
    """An engine's 4xx, passed on: the request itself is at fault, no other engine would do."""
    message, code = raw[:500].decode(errors="replace"), "invalid_request"
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        err = orjson.loads(raw)["error"]
        message, code = str(err.get("message", message)), str(err.get("code") or code)
    return RequestError(status, message, code)


def _hdr(rid: str) -> dict[str, str]:
    return {"X-Request-ID": rid, "Content-Type": JSON}


async def _cancelled(task: asyncio.Task[tuple[UpstreamResponse, bytes]]) -> None:
    """Cancel a decode start and wait until it has ended; an answer it got already (its prefill
    was given up as late, yet finished) is dropped, its connection closed."""
    task.cancel()
    await asyncio.wait([task])  # never raises: the task's outcome is not ours to see
    if not task.cancelled() and task.exception() is None:
        task.result()[0].close()


async def run(
    server: RouterServer,
    host: str,
    port: int,
    admin: tuple[str, int] | None = None,
    reuse_port: bool = False,
) -> None:
    """Serve until cancelled; ``admin``: also the admin app on (host, port); ``reuse_port``:
    one of several processes on the ports."""
    lim, cfg = server.cfg.limits, server.cfg
    limits = FrontLimits(cfg.max_body_bytes, lim.body_timeout_s, lim.idle_timeout_s)
    apps = [(server.app(), host, port)]
    if admin is not None:
        apps.append((server.admin_app(), *admin))
    await server.start()
    try:
        await front.serve(apps, limits, reuse_port)
    finally:
        await server.stop()
