"""What one client request may cost the router and the engines behind it, and how long a
connection may take to send it. Each limit answers an OpenAI-style error (counted in
``prfaas_router_errors_total``) before anything is sent upstream.

The defaults never bite the case study (prompts up to 131,072 tokens, 1,024 output tokens) and
stop the abuse each is named for: ``max_tokens`` of 10^8 holding every decode slot, prompts
larger than any model's context, a flood of concurrent requests, JSON nested so deep that
re-serialising it for the engines fails, and connections that never finish their request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_SCALARS = frozenset({int, float, str, bool, type(None)})


@dataclass(frozen=True, slots=True)
class Limits:
    max_tokens: int = 32_768  # requested output tokens (400 above)
    max_prompt_tokens: int = 262_144  # counted prompt tokens (400 above)
    max_concurrency: int = 1024  # client requests in flight per router (429 above)
    max_json_depth: int = 64  # nesting of the request body (400 above)
    idle_timeout_s: float = 15.0  # to send a whole request head after connecting or an answer
    body_timeout_s: float = 60.0  # to send the whole body once the head is in (408 after)
    retry_after_s: int = 1  # Retry-After of a 429


def json_depth(obj: Any, limit: int) -> int:
    """Nesting depth of ``obj`` (a scalar: 0, ``[]``: 1), counted up to ``limit + 1`` at most.
    Iterative: a body nested 1,000 deep must not recurse. A list of scalars (token ids) is
    checked by type in one pass of C, not element by element in Python."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            if _SCALARS.issuperset(set(map(type, node))):
                deepest = max(deepest, depth)
                continue
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return deepest


class Gate:
    """Client requests in flight, at most ``limit``: ``enter()`` is False when full."""

    __slots__ = ("active", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def enter(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1
