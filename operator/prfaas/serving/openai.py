"""OpenAI-compatible ``/v1/completions`` and ``/v1/chat/completions``: parse and render.

Lenient where peers are lenient (unknown fields are ignored: sglang-router and vllm-router add
their own), strict where a wrong value would be silently misread (types of ``prompt``,
``messages``, ``max_tokens``, ``stream``). Errors carry the HTTP status to answer with.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

Kind = Literal["completions", "chat"]
DEFAULT_MAX_TOKENS = 16


class RequestError(Exception):
    """A request we answer with ``status`` and an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str = "invalid_request",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers  # e.g. a 429's Retry-After

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.code, self.status)


def error_body(message: str, code: str, status: int) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "code": code}}


@dataclass(frozen=True, slots=True)
class Prompt:
    """A parsed request: the prompt as token ids (exact) or text, and the generation limits."""

    kind: Kind
    model: str | None
    ids: tuple[int, ...] | None
    text: str
    max_tokens: int
    stream: bool
    include_usage: bool


def parse(kind: Kind, body: Any) -> Prompt:
    if not isinstance(body, Mapping):
        raise RequestError(400, "request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(400, "'model' must be a string")
    ids, text = _chat_text(body) if kind == "chat" else _prompt(body)
    max_tokens = _max_tokens(body)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise RequestError(400, "'stream' must be a boolean")
    options = body.get("stream_options") or {}
    if not isinstance(options, Mapping):
        raise RequestError(400, "'stream_options' must be an object")
    include_usage = bool(options.get("include_usage", False))
    return Prompt(kind, model, ids, text, max_tokens, stream, include_usage)


def _prompt(body: Mapping[str, Any]) -> tuple[tuple[int, ...] | None, str]:
    if "prompt" not in body:
        raise RequestError(400, "missing field 'prompt'")
    p = body["prompt"]
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str | list):
        p = p[0]  # a batch of one
    if isinstance(p, str):
        return None, p
    if isinstance(p, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
        if not p:
            raise RequestError(400, "'prompt' must not be empty")
        return tuple(p), ""
    if isinstance(p, list) and p and all(isinstance(t, str | list) for t in p):
        raise RequestError(400, "batched prompts are not supported: send one prompt per request")
    raise RequestError(400, "'prompt' must be a string or a list of token ids")


def _chat_text(body: Mapping[str, Any]) -> tuple[None, str]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list")
    parts: list[str] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise RequestError(400, f"messages[{i}] must be an object with a 'role'")
        content = m.get("content", "")
        if isinstance(content, list):  # content parts: text only
            texts = [c.get("text", "") for c in content if isinstance(c, Mapping)]
            content = "".join(t for t in texts if isinstance(t, str))
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise RequestError(400, f"messages[{i}].content must be a string or a list of parts")
        parts.append(f"<|{m['role']}|>{content}")
    return None, "\n".join(parts)


def _max_tokens(body: Mapping[str, Any]) -> int:
    # sglang-router renames chat max_tokens to max_completion_tokens: accept both
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(400, f"'{key}' must be an integer >= 1")
        return value
    return DEFAULT_MAX_TOKENS


# -- responses --------------------------------------------------------------------------------
def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(
    kind: Kind, rid: str, model: str, text: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
    if kind == "chat":
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": rid,
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage(prompt_tokens, completion_tokens),
    }


class SSE:
    """Server-sent event chunks of one streamed answer, in OpenAI's shape."""

    def __init__(self, kind: Kind, rid: str, model: str) -> None:
        self.kind = kind
        self._head = {
            "id": rid,
            "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
            "created": int(time.time()),
            "model": model,
        }

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        payload = {**self._head, "choices": choices, **extra}
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def role(self) -> bytes:
        return self._event([{"index": 0, "delta": {"role": "assistant", "content": ""}}])

    def tokens(self, pieces: Sequence[str]) -> bytes:
        if self.kind == "chat":
            return b"".join(
                self._event([{"index": 0, "delta": {"content": p}, "finish_reason": None}])
                for p in pieces
            )
        return b"".join(
            self._event([{"index": 0, "text": p, "finish_reason": None}]) for p in pieces
        )

    def finish(self, prompt_tokens: int, completion_tokens: int, with_usage: bool) -> bytes:
        last: dict[str, Any] = {"index": 0, "finish_reason": "length"}
        last["delta" if self.kind == "chat" else "text"] = {} if self.kind == "chat" else ""
        out = self._event([last])
        if with_usage:
            out += self._event([], usage=usage(prompt_tokens, completion_tokens))
        return out + b"data: [DONE]\n\n"
