"""aiohttp helpers shared by the router and the engine."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from prfaas.serving.openai import RequestError


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; 413 past the app's ``client_max_size``, 400 if not JSON."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app._client_max_size  # aiohttp keeps it private
        raise RequestError(413, f"request body over {limit} bytes", "body_too_large") from None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise RequestError(400, "request body is not valid JSON", "invalid_json") from None


def error_response(exc: RequestError) -> web.Response:
    return web.json_response(exc.body(), status=exc.status)
