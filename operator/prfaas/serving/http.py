"""aiohttp helpers shared by the router and the engine. JSON goes through orjson: on the data
plane parsing and re-serialising bodies (a 128K-token prompt is ~800 KB) is the largest CPU
cost per request after HTTP itself, and orjson does it several times faster than ``json``."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from prfaas.serving.openai import RequestError

JSON = "application/json"


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; 413 past the app's ``client_max_size``, 400 if not JSON."""
    try:
        raw = await request.read()
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


def error_response(exc: RequestError) -> web.Response:
    return json_response(exc.body(), status=exc.status)
