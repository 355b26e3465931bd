"""Narrow tests of the engine's parts: request parsing, token counting, the KV store and
protocol, the link's bottleneck arithmetic."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import pytest

from prfaas.engine.kv import KVServer, KVStore, KVTransferError, fetch
from prfaas.engine.link import GatewayRefusedError, Shaper, bytes_per_gbit, gateway_target
from prfaas.engine.timing import ProfileError, timing_for
from prfaas.model.scenario import case_study
from prfaas.routing import tokens
from prfaas.serving import openai
from prfaas.serving.openai import RequestError
from prfaas.serving.tokenizer import Counter, TokenizerError


def test_parse_accepts_what_peer_routers_send() -> None:
    # sglang-router renames chat max_tokens; vllm-router adds fields vLLM never defined
    chat = openai.parse(
        "chat",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 7,
            "separate_reasoning": True,
        },
    )
    assert chat.max_tokens == 7 and "hi" in chat.text and chat.ids is None
    comp = openai.parse(
        "completions",
        {
            "prompt": [[1, 2, 3]],
            "max_tokens": 2,
            "stream": None,
            "kv_transfer_params": {"do_remote_decode": True},
        },
    )
    assert comp.ids == (1, 2, 3) and not comp.stream and comp.max_tokens == 2
    parts = openai.parse(
        "chat",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ]
        },
    )
    assert parts.text.endswith("ab")


@pytest.mark.parametrize(
    ("kind", "body", "words"),
    [
        ("completions", [], "JSON object"),
        ("completions", {"max_tokens": 3}, "prompt"),
        ("completions", {"prompt": ["a", "b"]}, "batched"),
        ("completions", {"prompt": [1, "x"]}, "token ids"),
        ("completions", {"prompt": "x", "max_tokens": True}, "max_tokens"),
        ("completions", {"prompt": "x", "stream_options": 3}, "stream_options"),
        ("chat", {"messages": [{"content": "no role"}]}, "role"),
        ("chat", {"messages": "hi"}, "messages"),
    ],
)
def test_parse_rejects_with_a_named_field(kind: openai.Kind, body: object, words: str) -> None:
    with pytest.raises(RequestError) as err:
        openai.parse(kind, body)
    assert err.value.status == 400 and words in err.value.message


def test_text_approximation_is_stable_and_prefix_preserving() -> None:
    a = tokens.approximate("x" * 10_000)
    b = tokens.approximate("x" * 10_000 + "tail" * 1000)
    assert a.length == 2_500 and not a.exact
    assert b.hashes[: len(a.hashes)] == a.hashes  # same prefix, same block ids
    assert tokens.approximate("y" + "x" * 9_999).hashes[0] != a.hashes[0]


def test_a_tokenizer_file_gives_exact_counts(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    counter = Counter(tmp_path)  # a folder holding tokenizer.json works too
    p = openai.parse("completions", {"prompt": "hello world " * 300})
    got = counter.count(p)
    assert got.exact and got.length == 600 and len(got.hashes) == 1
    long = openai.parse("completions", {"prompt": "hello world " * 5000})  # off the loop
    assert asyncio.run(counter.count_async(long)).length == counter.count(long).length == 10_000
    with pytest.raises(TokenizerError):
        Counter(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(TokenizerError):
        Counter(tmp_path / "bad.json")


def test_timing_follows_the_profile_and_scales() -> None:
    s = case_study()
    h200, h20 = timing_for(s, "H200"), timing_for(s, "h20", speedup=10)
    assert h200.prefill_seconds(32_768) == pytest.approx(1.84, rel=0.05)
    assert h20.prefill_seconds(32_768) == pytest.approx(0.4498, rel=0.01)
    assert h20.step_seconds == pytest.approx(0.0025)
    assert h200.kv_bytes(32_768) == pytest.approx(701.3 * 2**20, rel=1e-6)
    assert timing_for(s, "h20", zero_compute=True).prefill_seconds(10**5) == 0
    with pytest.raises(ProfileError, match="h20, h200"):
        timing_for(s, "b200")


def test_shaper_is_a_shared_fifo_bottleneck() -> None:
    sh = Shaper(gbps=8.0, one_way_s=0.01, bytes_per_gbit=bytes_per_gbit(1.0, 1.0))
    assert sh.rate() == pytest.approx(1e9)  # 8 Gbps = 1e9 B/s
    first = sh.schedule(10**8, now=0.0)  # 0.1 s on the wire + 10 ms
    second = sh.schedule(10**8, now=0.0)  # queues behind the first
    assert first == pytest.approx(0.11) and second == pytest.approx(0.21)
    assert sh.schedule(1, now=5.0) == pytest.approx(5.01, abs=1e-6)  # idle link: no queue


def test_kv_fetch_waits_for_the_prefill_and_takes_the_entry() -> None:
    async def scenario() -> None:
        store = KVStore()
        sent: list[int] = []
        server = KVServer(store, wait_s=2.0, on_sent=sent.append)
        await server.start("127.0.0.1", 0)
        assert server._server is not None
        port = server._server.sockets[0].getsockname()[1]
        # SGLang order: decode asks first, prefill offers later
        pending = asyncio.create_task(fetch("127.0.0.1", port, "room:7", 5))
        await asyncio.sleep(0.1)
        store.put("room:7", 200_000)
        assert await pending == 200_000 and sum(sent) == 200_000
        with pytest.raises(KVTransferError, match="unknown key"):  # taken: a second fetch fails
            await fetch("127.0.0.1", port, "room:7", 5)
        await server.stop()
        with pytest.raises(KVTransferError):  # nobody listening
            await fetch("127.0.0.1", port, "x", 1)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("line", "target"),
    [
        (b"FETCH 10.245.1.7:9000/abc\n", ("10.245.1.7", 9000)),
        (b"FETCH [fd00::5]:9000/abc\n", ("fd00::5", 9000)),
    ],
)
def test_the_gateway_dials_the_engine_the_key_names(line: bytes, target: tuple[str, int]) -> None:
    allow = [ipaddress.ip_network("10.245.0.0/16"), ipaddress.ip_network("fd00::/64")]
    assert gateway_target(line, allow) == target


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"FETCH 10.96.0.1:443/abc\n", "outside the networks"),  # not the pool's network
        (b"FETCH 127.0.0.1:9000/abc\n", "outside the networks"),
        (b"FETCH kubernetes.default:443/abc\n", "not an IP address"),  # no name lookups
        (b"FETCH 10.245.1.7:9000\n", "bad request"),  # no key: a key-less fetch
        (b"GET / HTTP/1.1\r\n", "bad request"),
        (b"FETCH 10.245.1.7:0/abc\n", "bad port"),
        (b"", "bad request"),
    ],
)
def test_the_gateway_is_no_open_proxy(line: bytes, words: str) -> None:
    with pytest.raises(GatewayRefusedError, match=words):
        gateway_target(line, [ipaddress.ip_network("10.245.0.0/16")])
