"""aiohttp helpers of the engine and the link gateway. JSON goes through orjson: on the data
plane parsing and re-serialising bodies (a 128K-token prompt is ~800 KB) is the largest CPU
cost per request after HTTP itself, and orjson does it several times faster than ``json``."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from prfaas.serving.openai import Kind, RequestError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

JSON = "application/json"


async def read_json(request: web.Request, timeout: float = math.inf) -> Any:
    """The request's JSON body; 413 past the app's ``client_max_size``, 408 if it takes longer
    than ``timeout`` seconds to arrive, 400 if not JSON."""
    try:
        async with asyncio.timeout(None if math.isinf(timeout) else timeout):
            raw = await request.read()
    except TimeoutError:
        raise RequestError(408, f"request body not received within {timeout:g} s",
                           "body_timeout") from None  # fmt: skip
    except web.HTTPRequestEntityTooLarge:
        limit = request.app._client_max_size  # aiohttp keeps it private
        raise RequestError(413, f"request body over {limit} bytes", "body_too_large") from None
    try:
        return orjson.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise RequestError(400, "request body is not valid JSON", "invalid_json") from None


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type=JSON, headers=headers)


def add_openai_routes(
    app: web.Application, serve: Callable[[web.Request, Kind], Awaitable[web.StreamResponse]]
) -> None:
    """``POST /v1/completions`` and ``/v1/chat/completions`` to ``serve(request, kind)``."""

    async def completions(request: web.Request) -> web.StreamResponse:
        return await serve(request, "completions")

    async def chat(request: web.Request) -> web.StreamResponse:
        return await serve(request, "chat")

    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat)


def metrics_handler(registry: CollectorRegistry) -> Handler:
    """``GET /metrics`` in the Prometheus text format."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    return metrics
