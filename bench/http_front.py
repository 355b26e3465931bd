"""Where the router's CPU per request goes, layer by layer (Benchmark A's follow-up): the CPU each
server process spends per request (user + system, from ``/proc``) under the same open loop as
Benchmark A (500 req/s, non-streaming completions of a 100-word prompt), for

1. ``aiohttp app``: an aiohttp ``web.Application`` (router, no middleware) answering a fixed
   JSON completion after parsing the body: what the router's HTTP front costs at the least;
2. ``aiohttp low-level``: the same on aiohttp's low-level ``web.Server`` (no application or
   URL dispatch);
3. ``bare protocol``: the same on a bare asyncio ``Protocol`` with httptools (no request or
   response objects, no task per request): the floor for a Python front on uvloop;
4. ``bare 2-phase proxy``: (3) doing vLLM's two-phase hand-off through ``prfaas``'s own engine
   client (``router/upstream.py``) to 2 prefill + 2 decode ``--zero-compute`` engines, with no
   routing, limits, deadlines or metrics: the floor for a Python P/D proxy;
5. ``prfaas front``: the router's own HTTP server (``router/front.py``: request objects, a
   task per request, routes, limits, the answer's headers) answering the same fixed completion;
6. ``prfaas router``, everything on; then the Rust peers (sglang-router, vllm-router; ``make
   peers``) in the same P/D set-up, unless ``--no-peers``.

(6) − (4) is what the router's features and its front cost together; (5) − (3) the front's
share of it; the rest is the router's own work per request (``bench/router_path.py`` measures
it in-process, without HTTP).

    .venv/bin/python bench/http_front.py             # ~3 min; make bench-http-front

Prints a table; writes JSON to .local/bench/http_front-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any, cast

import orjson
from rich.console import Console
from rich.table import Table

from loadgen import Target, Via, open_loop
from prfaas_dev.peers import PeersMissingError, require_all
from prfaas_dev.ports import free_port
from prfaas_dev.stack import Stack
from router_overhead import OUT, body, cpu_seconds, pin

ANSWER = orjson.dumps({
    "id": "cmpl-0", "object": "text_completion", "model": "sim-model",
    "choices": [{"index": 0, "text": "tok " * 16, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 101, "completion_tokens": 16, "total_tokens": 117},
})  # fmt: skip
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
SERVERS = (
    "aiohttp app", "aiohttp low-level", "bare protocol", "prfaas front", "bare 2-phase proxy",
)  # fmt: skip


# -- the servers (each run in its own process: ``--serve KIND PORT [PREFILLS DECODES]``) -------
def serve(kind: str, port: int, prefills: list[str], decodes: list[str]) -> None:
    import uvloop

    if kind.startswith("aiohttp"):
        from aiohttp import web

        async def handle(request: web.BaseRequest) -> web.Response:
            orjson.loads(await request.read())
            return web.Response(body=ANSWER, content_type="application/json")

        async def main_aiohttp() -> None:
            if kind == "aiohttp app":
                app = web.Application()
                app.router.add_route("*", "/{tail:.*}", handle)
                runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
                await runner.setup()
                await web.TCPSite(runner, "127.0.0.1", port).start()
                await asyncio.Event().wait()
            else:  # low-level: no application, no URL dispatch
                low = web.Server(handle, handler_cancellation=True)
                server = await asyncio.get_running_loop().create_server(low, "127.0.0.1", port)
                await server.serve_forever()

        uvloop.run(main_aiohttp())
        return
    if kind == "prfaas front":
        from prfaas.router import front

        async def fixed(request: front.Request) -> front.Response:
            orjson.loads(await request.read())
            return front.Response(ANSWER, 200, front.JSON, None)

        uvloop.run(front.serve([(fixed, "127.0.0.1", port)], front.FrontLimits()))
        return
    uvloop.run(_bare(port, prefills, decodes))


async def _bare(port: int, prefills: list[str], decodes: list[str]) -> None:
    import httptools

    from prfaas.router import handoff
    from prfaas.router.upstream import UpstreamClient

    upstream = UpstreamClient(2.0, 60.0)
    turn = itertools.count()
    hdr = {"Content-Type": "application/json"}

    async def proxy(req: dict[str, Any]) -> bytes:
        i = next(turn)
        first = orjson.dumps(handoff.prefill_body(req, None))
        _, raw = await upstream.call(prefills[i % len(prefills)] + "/v1/completions", first, hdr)
        kvp = handoff.after_prefill(orjson.loads(raw), None)
        second = orjson.dumps({**req, **handoff.decode_fields(kvp, None)})
        _, raw = await upstream.call(decodes[i % len(decodes)] + "/v1/completions", second, hdr)
        return raw

    class Bare(asyncio.Protocol):
        """HTTP/1.1 keep-alive, one request at a time per connection (the load generator's)."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
            self.parser = httptools.HttpRequestParser(self)
            self.body: list[bytes] = []

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_body(self, chunk: bytes) -> None:
            self.body.append(chunk)

        def on_message_complete(self) -> None:
            raw, self.body = b"".join(self.body), []
            if not prefills:
                if raw:
                    orjson.loads(raw)
                self.transport.write(HEAD % len(ANSWER) + ANSWER)
                return
            self.task = asyncio.ensure_future(self.answer(orjson.loads(raw)))

        async def answer(self, req: dict[str, Any]) -> None:
            out = await proxy(req)
            self.transport.write(HEAD % len(out) + out)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Bare, "127.0.0.1", port)
    await server.serve_forever()


# -- the measurement ------------------------------------------------------------------------
def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def cpu_per_request(
    target: Target, pid: int, load: list[tuple[float, str, dict[str, Any], Any]], repeats: int
) -> list[float]:
    await open_loop(target, load[:200])  # warm-up: connections, caches
    out = []
    for _ in range(repeats):
        c0 = cpu_seconds(pid)
        s = await open_loop(target, load)
        if s.errors:
            raise RuntimeError(f"{target.name}: {s.errors} errors, first: {s.first_error}")
        out.append((cpu_seconds(pid) - c0) * 1e3 / s.ok)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop req/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="per target (median shown)")
    parser.add_argument("--no-peers", action="store_true", help="skip sglang- and vllm-router")
    parser.add_argument(
        "--server-core",
        type=int,
        default=None,
        metavar="N",
        help="pin each measured server to core N and the client and engines to the other cores "
        "(a server with a core of its own, no cross-core wake-ups)",
    )
    parser.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    cores = os.sched_getaffinity(0)
    if args.server_core is not None and (args.server_core not in cores or len(cores) < 2):
        parser.error(f"--server-core must be one of this process's cores {sorted(cores)}, "
                     "and there must be another one left for the client and engines")  # fmt: skip
    if args.repeats < 1 or args.rate * args.duration < 1:
        parser.error("--repeats must be at least 1, and --rate × --duration at least 1 request")
    if args.serve:
        kind, port, *urls = args.serve
        pre, dec = (urls[0].split(","), urls[1].split(",")) if urls else ([], [])
        serve(kind, int(port), pre, dec)
        return 0
    console = Console(width=max(Console().width, 100))
    tools = None
    if not args.no_peers:
        try:
            tools = require_all()
        except PeersMissingError as e:
            console.print(f"[red]{e}[/] (or --no-peers)")
            return 2
    n = int(args.rate * args.duration)
    load = [(i / args.rate, "completions", body(i, 100, 16), None) for i in range(n)]
    rows: dict[str, list[float]] = {}
    if args.server_core is not None:  # before any process starts: they inherit it
        os.sched_setaffinity(0, cores - {args.server_core})
    with Stack(OUT / f"http_front-{time.strftime('%Y%m%d-%H%M%S')}") as stack:
        pre = [stack.engine("prefill", zero_compute=True) for _ in range(2)]
        dec = [stack.engine("decode", zero_compute=True) for _ in range(2)]
        urls = [",".join(e.url for e in pre), ",".join(e.url for e in dec)]
        me = [sys.executable, str(Path(__file__).resolve()), "--serve"]
        targets: list[tuple[str, str, int]] = []
        for kind in SERVERS:
            port = free_port()
            extra = urls if kind == "bare 2-phase proxy" else []
            proc = stack.start(
                stack.unique_name(kind.replace(" ", "-")), [*me, kind, str(port), *extra]
            )
            proc.wait_ready(lambda p=port: listening(p), 30)  # type: ignore[misc]
            targets.append((kind, f"http://127.0.0.1:{port}", proc.pid))
        ours = stack.prfaas_router(pre, dec)
        targets.append(("prfaas router", ours.url, ours.proc.pid))
        if tools is not None:
            for name, svc in (
                ("sglang-router", stack.sglang_router(tools.sglang_router, pre, dec)),
                ("vllm-router", stack.vllm_router(tools.vllm_router, pre, dec)),
            ):
                targets.append((name, svc.url, svc.proc.pid))
        for name, url, pid in targets:
            if args.server_core is not None:
                pin(pid, {args.server_core})
            console.print(f"[bold]{name}[/]: {args.repeats} × {n} requests at {args.rate:g}/s")
            rows[name] = asyncio.run(cpu_per_request(Via(name, url), pid, load, args.repeats))
    where = "" if args.server_core is None else f", each server alone on core {args.server_core}"
    t = Table(title=f"Server CPU per request, open loop {args.rate:g} req/s (non-streaming){where}")
    for col in ("server", "CPU ms/request (median)", "runs"):
        t.add_column(col, justify="left" if col == "server" else "right")
    for name, runs in rows.items():
        t.add_row(name, f"{statistics.median(runs):.3f}", " ".join(f"{r:.3f}" for r in runs))
    console.print(t)
    path = OUT / f"http_front-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report = {"benchmark": "http_front", "rate": args.rate, "duration_s": args.duration,
              "server_core": args.server_core,
              "cpu_ms_per_request": {k: round(statistics.median(v), 4) for k, v in rows.items()},
              "runs": rows}  # fmt: skip
    path.write_text(json.dumps(report, indent=2))
    console.print(f"JSON: {path.relative_to(OUT.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
