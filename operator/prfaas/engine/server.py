"""The engine's HTTP server: OpenAI API, P/D hand-offs, health, metrics, load.

One request, by what it carries:

- ``kv_transfer_params.do_remote_decode`` (vLLM phase 1): prefill only; answer one token as
  JSON with ``kv_transfer_params`` naming where decode can pull the KVCache.
- ``kv_transfer_params.do_remote_prefill`` (vLLM phase 2): pull the KVCache, then decode.
- ``bootstrap_room`` (SGLang: the same body goes to both at once): a prefill engine prefills,
  offers the KVCache under the room and ends its response at once; a decode engine pulls it
  from ``bootstrap_host:bootstrap_port`` (waiting for the prefill), then decodes.
- neither: prefill and decode here.

Prefill is one FIFO server per instance (as the planner models it); decode runs up to
``maxBatchSize`` sequences, one token per step each. The engine's own prefix cache
(``routing.prefix`` rules, hybrid exact-state included) makes cached prefixes cheaper.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from prfaas.engine.kv import KVServer, KVStore, KVTransferError, fetch
from prfaas.engine.metrics import EngineMetrics
from prfaas.engine.peers import LOOPBACK, KVPeers
from prfaas.engine.timing import Timing
from prfaas.routing.prefix import PrefixIndex
from prfaas.routing.tokens import PromptTokens
from prfaas.serving import openai
from prfaas.serving.http import add_openai_routes, json_response, metrics_handler, read_json
from prfaas.serving.openai import SSE, Kind, Prompt, RequestError
from prfaas.serving.tokenizer import Counter

Role = Literal["prefill", "decode", "both"]
log = logging.getLogger("prfaas.engine")
_OFFER_S = 10.0  # a KVCache not pulled within this is orphaned (a failed pair): off the link


def token_text(k: int) -> str:
    return f" tok{k}"


def expected_text(n: int) -> str:
    """The whole answer of ``n`` tokens (tests compare streams against it)."""
    return "".join(token_text(k) for k in range(n))


@dataclass
class EngineConfig:
    role: Role
    model: str
    timing: Timing
    host: str = "127.0.0.1"
    kv_port: int = 0
    kv_advertise: tuple[str, int] | None = None  # the address decode pulls from (a link relay)
    kv_via: tuple[str, int] | None = None  # a link gateway: advertised; keys name kv_address
    get_load_format: Literal["sglang", "vllm"] = "sglang"
    kv_timeout_s: float = 60.0
    max_body_bytes: int = 64 << 20
    cache_blocks: int = 1 << 16
    tokenizer: str | None = None
    emit_interval_s: float = 0.02  # tokens due are written together, at most this often
    kv_peers: tuple[str, ...] = LOOPBACK  # networks (CIDR) or host names decode may pull from
    admin: bool = False  # POST /flush_cache


class Engine:
    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        self.t = cfg.timing
        self.metrics = EngineMetrics(cfg.model, cfg.role)
        self.counter = Counter(cfg.tokenizer)
        self.cache = PrefixIndex(capacity_blocks=cfg.cache_blocks)
        self.store = KVStore()
        self.kv_server = KVServer(self.store, cfg.kv_timeout_s, self.metrics.kv_sent.inc)
        self.kv_peers = KVPeers(cfg.kv_peers)
        scale = self.t.kv_byte_scale
        self.metrics.kv_pending.set_function(
            lambda: (self.store.offered(_OFFER_S) + self.kv_server.sending) / scale
        )
        self.prefill_lock = asyncio.Lock()
        self.decode_slots = asyncio.Semaphore(self.t.max_batch)
        self.queued_tokens = 0
        self._running = 0
        self._waiting = 0
        self.engine_id = uuid.uuid4().hex[:12]

    # -- lifecycle ---------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_body_bytes)
        add_openai_routes(app, self._serve)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._ok)
        app.router.add_get("/health_generate", self._ok)
        app.router.add_get("/metrics", metrics_handler(self.metrics.registry))
        for path in ("/server_info", "/get_server_info"):
            app.router.add_get(path, self._server_info)
        for path in ("/model_info", "/get_model_info"):
            app.router.add_get(path, self._model_info)
        app.router.add_get("/get_load", self._get_load)
        if self.cfg.admin:  # off by default: anyone who reaches the port could call it
            app.router.add_post("/flush_cache", self._flush)
        app.on_startup.append(self._start_kv)
        app.on_cleanup.append(self._stop_kv)
        return app

    async def _start_kv(self, _: web.Application) -> None:
        await self.kv_server.start(self.cfg.host, self.cfg.kv_port)

    async def _stop_kv(self, _: web.Application) -> None:
        await self.kv_server.stop()

    def kv_address(self) -> tuple[str, int]:
        return self.cfg.kv_advertise or (self.cfg.host, self.cfg.kv_port)

    # -- load accounting ---------------------------------------------------------------------
    def _gauge(self, running: int = 0, waiting: int = 0) -> None:
        self._running += running
        self._waiting += waiting
        self.metrics.running.set(self._running)
        self.metrics.waiting.set(self._waiting)

    @contextlib.asynccontextmanager
    async def _admitted(self, gate: asyncio.Lock | asyncio.Semaphore) -> AsyncIterator[None]:
        """Waiting until ``gate`` admits, then running: both counted for ``/metrics``."""
        self._gauge(waiting=1)
        admitted = False
        try:
            async with gate:
                admitted = True
                self._gauge(running=1, waiting=-1)
                try:
                    yield
                finally:
                    self._gauge(running=-1)
        finally:
            if not admitted:
                self._gauge(waiting=-1)

    # -- phases ------------------------------------------------------------------------------
    async def prefill(self, pt: PromptTokens) -> int:
        """Compute the uncached part of the prompt (FIFO); returns the uncached token count."""
        hit = self.cache.match(pt.hashes, pt.length)
        uncached = pt.length - hit.tokens
        self.queued_tokens += uncached
        try:
            async with self._admitted(self.prefill_lock):
                await asyncio.sleep(self.t.prefill_seconds(uncached))
        finally:
            self.queued_tokens -= uncached
        self.cache.insert(pt.hashes, pt.length)
        m = self.metrics
        m.prompt_tokens.inc(pt.length)
        m.cache_queries.inc(pt.length)
        m.cache_hits.inc(hit.tokens)
        return uncached

    async def pull(self, host: str, port: int, key: str) -> int:
        t0 = time.monotonic()
        try:
            n = await fetch(host, port, key, self.cfg.kv_timeout_s)
        except KVTransferError:
            self.metrics.kv_failures.inc()
            raise
        self.metrics.kv_received.inc(n)
        self.metrics.kv_seconds.observe(time.monotonic() - t0)
        return n

    async def decode(
        self, n: int, emit: Callable[[list[str]], Awaitable[None]] | None, arrived: float
    ) -> None:
        """Hold a batch slot and produce ``n`` tokens, one per step (emitted in ticks)."""
        async with self._admitted(self.decode_slots):
            await self._generate(n, emit, arrived)

    async def _generate(
        self, n: int, emit: Callable[[list[str]], Awaitable[None]] | None, arrived: float
    ) -> None:
        step = self.t.step_seconds
        start = time.monotonic()
        if emit is None:
            await asyncio.sleep(step * n)
            self.metrics.ttft.observe(start + step - arrived)
            self.metrics.generation_tokens.inc(n)
            return
        tick = self.cfg.emit_interval_s
        done, last = 0, start - tick  # the first token goes out exactly when it is due
        while done < n:
            if step > 0:
                next_at = max(start + (done + 1) * step, last + tick)
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                last = time.monotonic()
                due = min(n, max(done + 1, int((last - start) / step)))
            else:
                due = n
            if done == 0:
                self.metrics.ttft.observe(time.monotonic() - arrived)
            await emit([token_text(k) for k in range(done, due)])
            self.metrics.generation_tokens.inc(due - done)
            done = due

    # -- OpenAI endpoints --------------------------------------------------------------------
    async def _serve(self, request: web.Request, kind: Kind) -> web.StreamResponse:
        arrived = time.monotonic()
        try:
            body = await read_json(request)
            prompt = openai.parse(kind, body)
        except RequestError as exc:
            return json_response(exc.body(), status=exc.status)
        rid = request.headers.get("X-Request-ID") or f"cmpl-{uuid.uuid4().hex}"
        model = prompt.model or self.cfg.model
        kvp = body.get("kv_transfer_params")
        kvp = kvp if isinstance(kvp, Mapping) else {}
        room = body.get("bootstrap_room")
        pt = await self.counter.count_async(prompt)
        try:
            if kvp.get("do_remote_decode"):
                return await self._prefill_only(prompt, pt, rid, model, vllm=True)
            if kvp.get("do_remote_prefill"):
                source = _vllm_source(kvp)
            elif room is not None and self.cfg.role == "prefill":
                return await self._prefill_only(prompt, pt, rid, model, vllm=False, room=room)
            elif room is not None and self.cfg.role == "decode":
                source = _sglang_source(body, room)
            else:
                source = None
        except RequestError as exc:
            return json_response(exc.body(), status=exc.status)

        if source is not None and not self.kv_peers.allows(source[0]):
            err = openai.error_body(
                "the KV source is not a peer this engine was told about (--kv-peer)",
                "kv_peer_not_allowed",
                403,
            )
            return json_response(err, status=403)
        if source is None:
            self.metrics.requests.labels("prefill+decode").inc()
            await self.prefill(pt)
        else:
            self.metrics.requests.labels("decode").inc()
            try:
                await self.pull(*source)
            except KVTransferError as exc:
                log.warning("KV transfer failed for %s: %s", rid, exc)
                err = openai.error_body(f"KV transfer failed: {exc}", "kv_transfer_failed", 502)
                return json_response(err, status=502)
        return await self._answer(request, prompt, rid, model, pt.length, arrived)

    async def _answer(
        self, request: web.Request, prompt: Prompt, rid: str, model: str, n_prompt: int,
        arrived: float,
    ) -> web.StreamResponse:  # fmt: skip
        n = prompt.max_tokens
        if not prompt.stream:
            await self.decode(n, None, arrived)
            text = expected_text(n)
            return json_response(openai.completion(prompt.kind, rid, model, text, n_prompt, n))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})  # fmt: skip
        await resp.prepare(request)
        sse = SSE(prompt.kind, rid, model)
        if prompt.kind == "chat":
            await resp.write(sse.role())

        async def emit(pieces: list[str]) -> None:
            await resp.write(sse.tokens(pieces))

        await self.decode(n, emit, arrived)
        await resp.write(sse.finish(n_prompt, n, prompt.include_usage))
        await resp.write_eof()
        return resp

    async def _prefill_only(
        self, prompt: Prompt, pt: PromptTokens, rid: str, model: str, vllm: bool, room: Any = None
    ) -> web.Response:
        self.metrics.requests.labels("prefill").inc()
        uncached = await self.prefill(pt)
        nominal = self.t.kv_bytes(uncached)
        wire = self.t.wire_bytes(nominal)
        out = openai.completion(prompt.kind, rid, model, token_text(0), pt.length, 1)
        if vllm:
            key = uuid.uuid4().hex
            host, port = self.kv_address()
            if self.cfg.kv_via is not None:  # the gateway dials the address the key names
                key = f"{host}:{port}/{key}"
                host, port = self.cfg.kv_via
            out["kv_transfer_params"] = {
                "do_remote_prefill": True,
                "do_remote_decode": False,
                "remote_engine_id": self.engine_id,
                "remote_block_ids": [0],
                "remote_host": host,
                "remote_port": port,
                "tp_size": 1,
                "transfer_id": key,
                "prfaas_kv_bytes": nominal,  # nominal bytes: what the router meters on the link
                "prfaas_uncached_tokens": uncached,
            }
        else:
            key = f"room:{room}"
            out["prfaas_kv_bytes"] = nominal  # SGLang routers ignore the body; ours meters it
        self.metrics.handoffs.labels("vllm" if vllm else "sglang").inc()
        if wire:
            self.metrics.kv_offered.inc(nominal)
        self.store.put(key, wire)
        return json_response(out)

    # -- the rest ----------------------------------------------------------------------------
    async def _models(self, _: web.Request) -> web.Response:
        data = [{"id": self.cfg.model, "object": "model", "owned_by": "prfaas", "created": 0}]
        return json_response({"object": "list", "data": data})

    async def _ok(self, _: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def _server_info(self, _: web.Request) -> web.Response:
        # no model_path/tokenizer_path: sglang-router would try to download a tokenizer
        return json_response(
            {"served_model_name": self.cfg.model, "dp_size": 1,
             "disaggregation_mode": self.cfg.role if self.cfg.role != "both" else "null"}
        )  # fmt: skip

    async def _model_info(self, _: web.Request) -> web.Response:
        return json_response({"model_type": "prfaas-sim", "architectures": ["SimEngine"]})

    async def _get_load(self, _: web.Request) -> web.Response:
        if self.cfg.get_load_format == "vllm":
            return json_response({"load": self.queued_tokens})
        return json_response(
            [{"dp_rank": 0, "num_reqs": self._running, "num_waiting_reqs": self._waiting,
              "num_tokens": self.queued_tokens}]
        )  # fmt: skip

    async def _flush(self, _: web.Request) -> web.Response:
        self.cache.clear()
        return json_response({"flushed": True})


def _vllm_source(kvp: Mapping[str, Any]) -> tuple[str, int, str]:
    host, port, key = kvp.get("remote_host"), kvp.get("remote_port"), kvp.get("transfer_id")
    if not isinstance(host, str) or not isinstance(port, int) or not isinstance(key, str):
        raise RequestError(400, "kv_transfer_params needs remote_host, remote_port, transfer_id")
    return host, port, key


def _sglang_source(body: Mapping[str, Any], room: Any) -> tuple[str, int, str]:
    host, port = body.get("bootstrap_host"), body.get("bootstrap_port")
    if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool):
        raise RequestError(
            400, "bootstrap_host/bootstrap_port missing: give the router the prefill's KV port "
            "(--prefill URL KV_PORT)"
        )  # fmt: skip
    return host, port, f"room:{room}"


async def run(cfg: EngineConfig, port: int, ready: Callable[[], None] | None = None) -> None:
    """Serve until cancelled."""
    engine = Engine(cfg)
    runner = web.AppRunner(engine.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, port)
    await site.start()
    if ready is not None:
        ready()
    try:
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
