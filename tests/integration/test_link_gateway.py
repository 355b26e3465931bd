"""``prfaas link --gateway-port``: one shaped link for PrefillPool engines that come and go.

Prefill engines started with ``--kv-via`` advertise the gateway and name themselves in every
transfer key; decode pulls through the gateway, which dials the named engine only inside its
``--allow`` networks. Real processes on 127.0.0.1, the vLLM two-phase hand-off driven by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prfaas.engine.server import expected_text
from prfaas_dev.http import http_get, http_post_json, scrape
from prfaas_dev.ports import free_port
from prfaas_dev.stack import Engine, Service, Stack

pytestmark = pytest.mark.integration
SPEEDUP = 50.0


def _prefill(engine: Engine, prompt: list[int]) -> dict[str, Any]:
    body = {
        "model": "sim-model",
        "prompt": prompt,
        "max_tokens": 1,
        "kv_transfer_params": {"do_remote_decode": True},
    }
    status, raw = http_post_json(engine.url + "/v1/completions", body, timeout=30)
    assert status == 200, raw
    params: dict[str, Any] = json.loads(raw)["kv_transfer_params"]
    return params


def _decode(engine: Engine, prompt: list[int], params: dict[str, Any]) -> tuple[int, Any]:
    body = {"model": "sim-model", "prompt": prompt, "max_tokens": 4, "kv_transfer_params": params}
    status, raw = http_post_json(engine.url + "/v1/completions", body, timeout=30)
    return status, json.loads(raw)


def _stack(log_dir: Path, allow: str) -> tuple[Stack, list[Engine], Engine, Service]:
    stack = Stack(log_dir)
    gw = free_port()
    link = stack.link({}, 100, 10, SPEEDUP, gateway=(gw, [allow]))
    via = ["--kv-via", f"127.0.0.1:{gw}"]
    pool = [stack.engine("prefill", "h200", SPEEDUP, extra=via) for _ in range(2)]
    decode = stack.engine("decode", "h20", SPEEDUP)
    return stack, pool, decode, link


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[list[Engine], Engine, Service]]:
    stack, pool, decode, link = _stack(tmp_path, "127.0.0.0/8")
    with stack:
        yield pool, decode, link


def test_decode_pulls_each_engines_kvcache_through_the_one_gateway(
    served: tuple[list[Engine], Engine, Service],
) -> None:
    pool, decode, link = served
    gw = json.loads(http_get(link.url + "/link")[1])["gateway"]
    prompt = list(range(8_000))
    for engine in pool:  # two engines, one gateway port: the key says which engine to dial
        params = _prefill(engine, prompt)
        assert (params["remote_host"], params["remote_port"]) == ("127.0.0.1", gw["port"])
        assert params["transfer_id"].startswith(f"127.0.0.1:{engine.kv_port}/")
        status, out = _decode(decode, prompt, params)
        assert status == 200 and out["choices"][0]["text"] == expected_text(4)
    m = scrape(link.url + "/metrics")
    assert m["prfaas_link_bytes_total"] > 0
    assert m["prfaas_link_gateway_refused_total"] == 0


def test_the_gateway_refuses_engines_outside_its_networks(tmp_path: Path) -> None:
    stack, pool, decode, link = _stack(tmp_path, "10.245.0.0/16")  # not where the engines are
    with stack:
        prompt = list(range(4_000))
        status, out = _decode(decode, prompt, _prefill(pool[0], prompt))
        assert status == 502 and out["error"]["code"] == "kv_transfer_failed"
        assert "outside the networks" in out["error"]["message"]
        m = scrape(link.url + "/metrics")
        assert m["prfaas_link_gateway_refused_total"] == 1
        assert m["prfaas_link_bytes_total"] == 0
