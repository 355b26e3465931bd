"""The router's own work per request, in-process, without HTTP: what ``prfaas router`` adds
over a bare P/D proxy (``make bench-http-front``), measured to a microsecond.

The router's client app (``RouterServer.app()``: parsing and checks, token count, decision,
accounting, phase deadlines, metrics, the answer) runs on uvloop against an engine client that
answers at once (a vLLM two-phase hand-off: prefill's ``kv_transfer_params``, then decode's
answer), one request after the other, and the process CPU time is divided by the requests.
No sockets, no other process: run-to-run noise is ~1 µs, where a router's CPU per request
over HTTP varies by ±20 µs on a shared machine. What it leaves out: the HTTP front and the
engine client's bytes (``bench/http_front.py`` measures those).

    .venv/bin/python bench/router_path.py                 # ~10 s; make bench-router-path
    .venv/bin/python bench/router_path.py --no-deadlines  # the same without phase deadlines
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import orjson
import uvloop
from prometheus_client import disable_created_metrics
from rich.console import Console

from prfaas.model.scenario import case_study
from prfaas.router.deadline import PhaseBudget
from prfaas.router.fleet import Fleet
from prfaas.router.front import Response
from prfaas.router.policy_source import policy_from_document
from prfaas.router.server import RouterConfig, RouterServer
from prfaas.router.upstream import UpstreamResponse
from router_overhead import OUT, body

PREFILLS = ["http://127.0.0.1:9", "http://127.0.0.2:9"]  # never dialled: no I/O here
DECODES = ["http://127.0.0.3:9", "http://127.0.0.4:9"]
PREFILLED = orjson.dumps({
    "id": "p", "object": "text_completion", "model": "sim-model",
    "choices": [{"index": 0, "text": "", "finish_reason": "length"}],
    "kv_transfer_params": {"do_remote_decode": False, "do_remote_prefill": True,
                           "remote_engine_id": "e0", "remote_block_ids": [1, 2, 3, 4, 5, 6, 7],
                           "remote_host": "127.0.0.1", "remote_port": 9100},
    "usage": {"prompt_tokens": 102, "completion_tokens": 1, "total_tokens": 103},
})  # fmt: skip


def decoded(tokens: int) -> bytes:
    return orjson.dumps({
        "id": "d", "object": "text_completion", "created": 1, "model": "sim-model",
        "choices": [{"index": 0, "finish_reason": "length", "logprobs": None,
                     "text": " tok" * tokens}],
        "usage": {"prompt_tokens": 102, "completion_tokens": tokens, "total_tokens": 102 + tokens},
    })  # fmt: skip


class _Answer:
    """What ``RouterServer`` reads of an engine's answer (``UpstreamResponse``'s surface)."""

    status = 200
    content_type = "application/json"

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self.headers = {"content-type": self.content_type}

    async def read(self) -> bytes:
        return self._raw

    def release(self) -> None: ...

    def close(self) -> None: ...


class _Engines:
    """The engine client, answering at once: prefill's hand-off, then decode's answer."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer

    async def call(self, url: str, body: bytes, headers: Any) -> tuple[int, bytes]:
        return 200, PREFILLED

    async def post(self, url: str, body: bytes, headers: Any) -> UpstreamResponse:
        return _Answer(self._answer)  # type: ignore[return-value]


class _Request:
    """What the app reads of a request (``front.Request``'s surface for a JSON answer)."""

    method, path, version, keep_alive = "POST", "/v1/completions", "1.1", True

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self.headers = {"host": "router", "content-type": "application/json",
                        "content-length": str(len(raw))}  # fmt: skip

    async def read(self) -> bytes:
        return self._raw


def router(deadlines: bool, tokens: int) -> RouterServer:
    budget = PhaseBudget.from_scenario(case_study()) if deadlines else None
    server = RouterServer(RouterConfig(budget=budget), Fleet())
    server.set_policy(policy_from_document({
        "version": 1, "prefillEndpoints": PREFILLS, "decodeEndpoints": DECODES,
    }, "bench"))  # fmt: skip
    for engine in server.fleet.engines.values():
        engine.healthy = True  # as after a first scrape
    server.upstream = _Engines(decoded(tokens))  # type: ignore[assignment]
    return server


async def per_request(server: RouterServer, bodies: list[bytes], rounds: int) -> list[float]:
    app = server.app()
    for raw in bodies[: len(bodies) // 10]:  # warm-up
        await app(_Request(raw))  # type: ignore[arg-type]
    out = []
    for _ in range(rounds):
        t0 = time.process_time()
        for raw in bodies:
            reply = await app(_Request(raw))  # type: ignore[arg-type]
            if not isinstance(reply, Response) or reply.status != 200:
                raise RuntimeError(f"the router did not answer 200: {reply!r}")
        out.append((time.process_time() - t0) / len(bodies) * 1e6)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per round")
    parser.add_argument("--rounds", type=int, default=5, help="median shown")
    parser.add_argument("--no-deadlines", action="store_true", help="no phase deadlines")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    if args.requests < 10 or args.rounds < 1 or args.max_tokens < 1:
        parser.error("--requests must be at least 10, --rounds and --max-tokens at least 1")
    disable_created_metrics()  # type: ignore[no-untyped-call]  # as `prfaas router` does
    bodies = [orjson.dumps(body(i, 100, args.max_tokens)) for i in range(args.requests)]
    server = router(not args.no_deadlines, args.max_tokens)
    runs = uvloop.run(per_request(server, bodies, args.rounds))
    console = Console()
    what = "no phase deadlines" if args.no_deadlines else "phase deadlines on"
    console.print(f"router's own work: [bold]{statistics.median(runs):.1f} µs[/] CPU a request "
                  f"(median of {args.rounds} × {args.requests}; {what}): "
                  + " ".join(f"{r:.1f}" for r in runs))  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"router_path-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({
        "benchmark": "router_path", "args": vars(args),
        "us_per_request": round(statistics.median(runs), 2), "runs": runs,
    }, indent=2))  # fmt: skip
    console.print(f"JSON: {path.relative_to(OUT.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
