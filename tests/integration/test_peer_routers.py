"""Peer interop: sglang-router 0.3.2 (bootstrap P/D) and vllm-router 0.1.17 (NIXL two-phase P/D)
drive our simulated engines unchanged.

Two prefill and two decode engines (real ``prfaas engine`` processes on 127.0.0.1), both routers
in P/D mode in front of them. Every request must come back 200 with the engine's deterministic
answer (`` tok0 tok1 ...``), and the engines' own ``/metrics`` must show that the prefill ran on a
prefill engine, the decode on a decode engine, and that the decode received exactly the KV bytes
the prefill sent (the pairing worked). The routers come from ``make peers``; without them these
tests fail (never skip).
"""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from prfaas.engine.server import expected_text
from prfaas.serving import openai
from prfaas.serving.tokenizer import Counter
from prfaas_dev import peers
from prfaas_dev.http import scrape
from prfaas_dev.stack import Engine, Service, Stack

pytestmark = pytest.mark.integration

SPEEDUP = 20.0  # case-study timing / 20: a short prompt prefills in ms
_rids = itertools.count(1)


@dataclass
class Cluster:
    prefills: list[Engine]
    decodes: list[Engine]
    routers: dict[str, Service]

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {e.url: scrape(e.url + "/metrics") for e in self.prefills + self.decodes}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    try:
        sglang = peers.require_sglang_router()
        vllm = peers.require_vllm_router()
    except peers.PeersMissingError as e:
        pytest.fail(str(e), pytrace=False)
    with Stack(tmp_path_factory.mktemp("peer-routers")) as stack:
        prefills = [stack.engine("prefill", speedup=SPEEDUP) for _ in range(2)]
        decodes = [stack.engine("decode", speedup=SPEEDUP) for _ in range(2)]
        routers = {
            "sglang-router": stack.sglang_router(sglang, prefills, decodes),
            "vllm-router": stack.vllm_router(vllm, prefills, decodes),
        }
        yield Cluster(prefills, decodes, routers)


# -- requests ---------------------------------------------------------------------------------
def body(kind: str, stream: bool, max_tokens: int, n_prompt: int) -> dict[str, Any]:
    rid = next(_rids)
    b: dict[str, Any] = {"model": "sim-model", "max_tokens": max_tokens, "stream": stream}
    # text (sglang-router 0.3.2 answers 422 to token-id prompts), unique per request
    text = f"request {rid}: " + "words " * n_prompt
    if kind == "completions":
        b["prompt"] = text
    else:
        b["messages"] = [{"role": "user", "content": text}]
    if stream:
        b["stream_options"] = {"include_usage": True}
    return b


def prompt_tokens_of(kind: str, payload: dict[str, Any]) -> int:
    """What the engines count for this body (their tokenizer-less approximation)."""
    return Counter().count(openai.parse(kind, payload)).length  # type: ignore[arg-type]


def post(url: str, kind: str, payload: dict[str, Any]) -> tuple[int, str, bytes]:
    req = urllib.request.Request(
        f"{url}/v1/{'chat/completions' if kind == 'chat' else 'completions'}",
        json.dumps(payload).encode(),
        {"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def answer(kind: str, stream: bool, status: int, ctype: str, raw: bytes) -> tuple[str, int]:
    """Check one response's shape; return its text and the prompt tokens it reports."""
    assert status == 200, raw[:500]
    if not stream:
        assert ctype.startswith("application/json"), ctype
        out = json.loads(raw)
        choice = out["choices"][0]
        text = choice["message"]["content"] if kind == "chat" else choice["text"]
        assert choice["finish_reason"] == "length"
        return text, out["usage"]["prompt_tokens"]
    assert ctype.startswith("text/event-stream"), ctype
    events = [e for e in raw.decode().split("\n\n") if e.strip()]
    assert all(e.startswith("data: ") for e in events), events[:3]
    assert events[-1] == "data: [DONE]", events[-3:]
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1, "chunks of one stream carry one id"
    usage = chunks[-1]["usage"]
    pieces, finish = [], []
    for c in chunks[:-1]:
        for ch in c["choices"]:
            pieces.append(ch["delta"].get("content", "") if kind == "chat" else ch["text"])
            finish.append(ch.get("finish_reason"))
    assert finish[-1] == "length" and all(f is None for f in finish[1:-1]), finish
    assert sum(1 for p in pieces if p) >= 2, "the answer was streamed, not sent in one piece"
    return "".join(pieces), usage["prompt_tokens"]


# -- metric deltas ----------------------------------------------------------------------------
def delta(
    before: dict[str, dict[str, float]],
    after: dict[str, dict[str, float]],
    engines: list[Engine],
    key: str,
) -> float:
    return sum(after[e.url].get(key, 0.0) - before[e.url].get(key, 0.0) for e in engines)


PREFILL = 'prfaas_engine_requests_total{phase="prefill"}'
DECODE = 'prfaas_engine_requests_total{phase="decode"}'
BOTH = 'prfaas_engine_requests_total{phase="prefill+decode"}'
PROMPT = 'vllm:prompt_tokens_total{model_name="sim-model"}'
GENERATED = 'vllm:generation_tokens_total{model_name="sim-model"}'
KV_SENT = "prfaas_engine_kv_sent_bytes_total"
KV_RECEIVED = "prfaas_engine_kv_received_bytes_total"
KV_FAILED = "prfaas_engine_kv_fetch_failures_total"


def assert_disaggregated(
    c: Cluster,
    before: dict[str, dict[str, float]],
    after: dict[str, dict[str, float]],
    requests: int,
    prompt_tokens: int,
    generated: int,
) -> None:
    p, d = c.prefills, c.decodes
    assert delta(before, after, p, PREFILL) == requests, "prefills on the prefill engines"
    assert delta(before, after, d, DECODE) == requests, "decodes on the decode engines"
    for engines in (p, d):
        assert delta(before, after, engines, BOTH) == 0, "no engine ran a request alone"
    assert delta(before, after, d, PREFILL) == 0
    assert delta(before, after, p, DECODE) == 0
    assert delta(before, after, p, PROMPT) == prompt_tokens, "the prompt was prefilled once"
    assert delta(before, after, d, PROMPT) == 0, "the decode engines prefilled nothing"
    assert delta(before, after, d, GENERATED) == generated
    assert delta(before, after, p, GENERATED) == 0, "the prefill engines generated nothing"
    sent, received = delta(before, after, p, KV_SENT), delta(before, after, d, KV_RECEIVED)
    assert received > 0, "the decode engines received the KVCache"
    assert received == sent, "every KV byte sent by a prefill reached a decode"
    assert delta(before, after, p + d, KV_FAILED) == 0


# -- tests ------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("kind", ["completions", "chat"])
@pytest.mark.parametrize("router", ["sglang-router", "vllm-router"])
def test_one_request_is_disaggregated(
    cluster: Cluster, router: str, kind: str, stream: bool
) -> None:
    max_tokens = 37
    payload = body(kind, stream, max_tokens, 300)
    before = cluster.snapshot()
    text, prompt_tokens = answer(kind, stream, *post(cluster.routers[router].url, kind, payload))
    after = cluster.snapshot()
    assert text == expected_text(max_tokens)
    assert prompt_tokens == prompt_tokens_of(kind, payload)
    assert_disaggregated(cluster, before, after, 1, prompt_tokens, max_tokens)


@pytest.mark.parametrize("router", ["sglang-router", "vllm-router"])
def test_round_robin_pairs_every_engine(cluster: Cluster, router: str) -> None:
    before = cluster.snapshot()
    prompts = 0
    for _ in range(4):
        payload = body("completions", False, 5, 64)
        prompts += prompt_tokens_of("completions", payload)
        text, _ = answer("completions", False, *post(cluster.routers[router].url, "completions",
                                                     payload))  # fmt: skip
        assert text == expected_text(5)
    after = cluster.snapshot()
    for e in cluster.prefills:
        assert delta(before, after, [e], PREFILL) == 2, f"prefill {e.url} got half the requests"
    for e in cluster.decodes:
        assert delta(before, after, [e], DECODE) == 2, f"decode {e.url} got half the requests"
    assert_disaggregated(cluster, before, after, 4, prompts, 4 * 5)


@pytest.mark.parametrize("router", ["sglang-router", "vllm-router"])
def test_concurrent_streams_stay_paired(cluster: Cluster, router: str) -> None:
    """24 overlapping requests of different lengths: each decode must find its own KVCache
    (SGLang: by bootstrap_room; vLLM: by the transfer id in kv_transfer_params)."""
    cases = [
        (kind, stream, 8 + 9 * i, 50 + 40 * i)
        for i, (kind, stream) in enumerate(
            itertools.islice(
                itertools.cycle(itertools.product(["completions", "chat"], [True, False])), 24
            )
        )
    ]
    url = cluster.routers[router].url
    before = cluster.snapshot()

    def one(case: tuple[str, bool, int, int]) -> tuple[str, int, int]:
        kind, stream, max_tokens, n_prompt = case
        payload = body(kind, stream, max_tokens, n_prompt)
        text, n = answer(kind, stream, *post(url, kind, payload))
        return text, n, prompt_tokens_of(kind, payload)

    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(one, cases))
    after = cluster.snapshot()
    for (_, _, max_tokens, _), (text, reported, expected) in zip(cases, results, strict=True):
        assert text == expected_text(max_tokens)
        assert reported == expected
    assert_disaggregated(
        cluster,
        before,
        after,
        len(cases),
        sum(r[1] for r in results),
        sum(c[2] for c in cases),
    )
