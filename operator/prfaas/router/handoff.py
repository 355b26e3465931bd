"""The two P/D hand-offs the router speaks, as request bodies; the group's ``Handoff`` (from the
published policy) picks one.

- ``vllm``: phase 1 on prefill, ``max_tokens: 1`` and ``kv_transfer_params.do_remote_decode``;
  its answer's ``kv_transfer_params`` go with phase 2 to decode (``after_prefill``).
- ``sglang``: the client's body to prefill and decode at once, both with the same
  ``bootstrap_host`` (the prefill endpoint's host), ``bootstrap_port`` and a fresh random
  ``bootstrap_room`` (``Pairing``); decode pulls the KVCache from the prefill under that room.
  Prefill's answer is read only for the KV size our engines report; a real SGLang prefill
  reports none, and the link's load then comes from the pool side alone (``linkload``).

Prefill is always asked for a JSON answer (``stream: false``): it only says when prefill ended.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from prfaas.routing.policy import Handoff

_ROOM_BITS = 63  # SGLang's rooms are random non-negative int64s


def prefill_body(body: Mapping[str, Any], pairing: Mapping[str, Any] | None) -> dict[str, Any]:
    """What goes to the prefill engine: vLLM's phase 1 (``pairing`` None), or the client's body
    with the SGLang bootstrap fields."""
    req = {k: v for k, v in body.items() if k != "stream_options"}
    if pairing is not None:
        req.update(pairing, stream=False)
        return req
    req.update(stream=False, max_tokens=1, kv_transfer_params={"do_remote_decode": True})
    if "max_completion_tokens" in req:
        req["max_completion_tokens"] = 1
    return req


def after_prefill(answer: Any, pairing: Mapping[str, Any] | None) -> dict[str, Any]:
    """What prefill's answer adds to decode's request: vLLM's ``kv_transfer_params`` (empty if
    it gave none), or for SGLang the pairing (sent already) plus the KV size it reported."""
    if not isinstance(answer, Mapping):
        answer = {}
    if pairing is not None:
        return {**pairing, "prfaas_kv_bytes": answer.get("prfaas_kv_bytes")}
    kvp = answer.get("kv_transfer_params")
    return dict(kvp) if isinstance(kvp, Mapping) else {}


def decode_fields(handoff: Mapping[str, Any], pairing: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields decode's request gets on top of the client's body."""
    if pairing is not None:
        return dict(pairing)
    return {"kv_transfer_params": dict(handoff)} if handoff else {}


def kv_bytes(handoff: Mapping[str, Any]) -> int:
    """The nominal KV bytes prefill reported (0: not reported)."""
    n = handoff.get("prfaas_kv_bytes")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0


def pairing(prefill_url: str, handoff: Handoff) -> dict[str, Any] | None:
    """SGLang's bootstrap fields for one attempt on ``prefill_url`` (a new room every time, as
    sglang-router does on a retry); None under vLLM."""
    if not handoff.sglang:
        return None
    return {
        "bootstrap_host": urlsplit(prefill_url).hostname,
        "bootstrap_port": handoff.bootstrap_port,
        "bootstrap_room": secrets.randbits(_ROOM_BITS),
    }
