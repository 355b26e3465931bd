"""``prfaas router`` in front of engines that speak SGLang's P/D protocol (the same request to
prefill and decode at once, paired by ``bootstrap_room``), as the policy declares per group.

A 'PrefillPool' of one H200-profile prefill engine behind a shaped ``prfaas link`` (its
bootstrap port is the link's route to its KV port), a 'PD cluster' of one H20 prefill and two
H20 decode engines; both prefill groups declared ``sglang``. All real processes on 127.0.0.1,
timing of the case study divided by 20. The engines count what they prefilled for a decode
engine by protocol (``prfaas_engine_handoffs_total``): that is how the tests see which protocol
the router spoke.
"""

from __future__ import annotations

import http.client
import json
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from prfaas.engine.server import expected_text
from prfaas_dev.http import http_get, http_post_json
from prfaas_dev.ports import free_port
from prfaas_dev.stack import Engine, Service, Stack, router_policy

pytestmark = pytest.mark.integration

SPEEDUP = 20.0
T = 19_400
MODEL = "sim-model"
POOL = "h200-pool"


@dataclass
class Cluster:
    stack: Stack
    pool: Engine
    local: Engine
    decode: list[Engine]
    link: Service
    router: Service
    policy_file: Path

    def policy(self, version: int, local: str = "sglang", pool: str = "sglang") -> dict[str, Any]:
        def handoff(protocol: str, e: Engine) -> dict[str, Any]:
            if protocol == "sglang":
                return {"protocol": "sglang", "bootstrapPort": e.bootstrap_port}
            return {"protocol": protocol}

        doc = router_policy(
            [self.local],
            self.decode,
            [(POOL, [self.pool], 100.0)],
            T,
            {"local": handoff(local, self.local), POOL: handoff(pool, self.pool)},
        )
        doc["version"] = version
        return doc

    def write_policy(self, version: int, **protocols: str) -> None:
        self.policy_file.write_text(json.dumps(self.policy(version, **protocols)))
        deadline = time.monotonic() + 10
        while json.loads(http_get(self.router.admin_url + "/policy")[1])["version"] != version:
            assert time.monotonic() < deadline, "the router did not pick up the policy"
            time.sleep(0.1)


_next = [0]


def prompt(tokens: int) -> list[int]:
    """A fresh prompt (no shared prefix with any other test's)."""
    _next[0] += 1
    base = _next[0] * 1_000_000
    return list(range(base, base + tokens))


def complete(url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=60)
    path = body.pop("_path", "/v1/completions")
    conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    r = conn.getresponse()
    out = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, out


def gen(url: str, tokens: list[int], max_tokens: int = 4) -> tuple[int, dict[str, str], bytes]:
    return complete(url, {"model": MODEL, "prompt": tokens, "max_tokens": max_tokens})


def metric(url: str, name: str, **labels: str) -> float:
    _, body = http_get(url)
    total = 0.0
    for line in body.decode().splitlines():
        series, _, value = line.rpartition(" ")
        if line.startswith("#") or series.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def handoffs(e: Engine, protocol: str) -> float:
    return metric(e.url + "/metrics", "prfaas_engine_handoffs_total", protocol=protocol)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    logs = tmp_path_factory.mktemp("router-sglang-logs")
    with Stack(logs) as stack:
        lp, kv = free_port(), free_port()  # link port -> the pool engine's KV port
        pool = stack.engine("prefill", "h200", SPEEDUP, kv_port=kv, kv_advertise=("127.0.0.1", lp))
        link = stack.link({lp: ("127.0.0.1", kv)}, 100, 10, SPEEDUP)
        local = stack.engine("prefill", "h20", SPEEDUP)
        decode = [stack.engine("decode", "h20", SPEEDUP) for _ in range(2)]
        policy_file = logs / "policy.json"
        c = Cluster(stack, pool, local, decode, link, None, policy_file)  # type: ignore[arg-type]
        policy_file.write_text(json.dumps(c.policy(1)))
        args = ["--policy-file", str(policy_file), "--model", MODEL, "--scrape-interval", "0.5"]
        args += ["--link-retry", "2", "--speedup", str(SPEEDUP)]
        c.router = stack.router(args, "router", "/readyz")
        yield c


def test_both_groups_speak_sglang_and_place_by_threshold(cluster: Cluster) -> None:
    r = cluster.router.url
    before = {
        e.url: (handoffs(e, "sglang"), handoffs(e, "vllm")) for e in (cluster.pool, cluster.local)
    }
    link_before = metric(cluster.link.url + "/metrics", "prfaas_link_bytes_total")
    for n, where in ((1_000, "local"), (T + 2_000, "pool"), (60_000, "pool")):
        status, headers, body = gen(r, prompt(n))
        assert status == 200, body
        assert headers["x-prfaas-prefill"] == where, (n, headers)
        assert json.loads(body)["choices"][0]["text"] == expected_text(4)
    # the pool's KVCaches were SGLang hand-offs, over the shaped link, metered by the router
    assert handoffs(cluster.pool, "sglang") - before[cluster.pool.url][0] == 2
    assert handoffs(cluster.local, "sglang") - before[cluster.local.url][0] == 1
    assert handoffs(cluster.pool, "vllm") == before[cluster.pool.url][1]
    assert handoffs(cluster.local, "vllm") == before[cluster.local.url][1]
    assert metric(cluster.link.url + "/metrics", "prfaas_link_bytes_total") > link_before
    assert metric(r + "/metrics", "prfaas_router_link_bytes_total", pool=POOL) > 0
    running = json.loads(http_get(cluster.router.admin_url + "/policy")[1])
    assert running["prefillProtocol"] == "sglang" and running["pools"][0]["protocol"] == "sglang"
    assert running["pools"][0]["linkLoadFrom"] == "pool"  # our engines report the link's load


@pytest.mark.parametrize(
    ("path", "tokens", "where"),
    [
        ("/v1/completions", 30_000, "pool"),
        ("/v1/chat/completions", 30_000, "pool"),
        ("/v1/completions", 2_000, "local"),
    ],
)
def test_streamed_tokens_arrive_intact(
    cluster: Cluster, path: str, tokens: int, where: str
) -> None:
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 300,
        "stream": True,
        "_path": path,
        "stream_options": {"include_usage": True},
    }
    if path.endswith("chat/completions"):
        body["messages"] = [{"role": "user", "content": "x" * (tokens * 4)}]  # ~4 bytes/token
    else:
        body["prompt"] = prompt(tokens)
    sglang_before = handoffs(cluster.pool if where == "pool" else cluster.local, "sglang")
    status, headers, raw = complete(cluster.router.url, body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert headers["x-prfaas-prefill"] == where
    events = [e for e in raw.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    text, usage = "", None
    for e in events[:-1]:
        chunk = json.loads(e.removeprefix("data: "))
        for c in chunk["choices"]:
            text += c.get("text") or c.get("delta", {}).get("content") or ""
        usage = chunk.get("usage") or usage
    assert text == expected_text(300)
    assert usage is not None and usage["completion_tokens"] == 300
    assert (
        handoffs(cluster.pool if where == "pool" else cluster.local, "sglang") == sglang_before + 1
    )


def test_a_mixed_deployment_speaks_each_groups_protocol(cluster: Cluster) -> None:
    """Local PD-P on vLLM's two phases, the pool on SGLang's bootstrap, one set of decode
    engines (ours take both); then the other way round."""
    r = cluster.router.url
    try:
        for version, local, pool in ((2, "vllm", "sglang"), (3, "sglang", "vllm")):
            cluster.write_policy(version, local=local, pool=pool)
            local_before = handoffs(cluster.local, local)
            pool_before = handoffs(cluster.pool, pool)
            for n in (1_000, 40_000):
                for stream in (False, True):
                    body = {"model": MODEL, "prompt": prompt(n), "max_tokens": 8, "stream": stream}
                    status, headers, raw = complete(r, body)
                    assert status == 200, raw
                    assert headers["x-prfaas-prefill"] == ("local" if n < T else "pool")
                    assert expected_text(8).split()[-1] in raw.decode()
            assert handoffs(cluster.local, local) == local_before + 2
            assert handoffs(cluster.pool, pool) == pool_before + 2
    finally:
        cluster.write_policy(4)


def _burst(url: str, n: int, tokens: int) -> list[tuple[int, str]]:
    with ThreadPoolExecutor(n) as ex:
        results = list(ex.map(lambda _: gen(url, prompt(tokens)), range(n)))
    return [(s, h.get("x-prfaas-prefill", "")) for s, h, _ in results]


def test_cutting_the_link_fails_open_to_local_and_a_probe_brings_it_back(cluster: Cluster) -> None:
    r, link = cluster.router.url, cluster.link.url
    assert gen(r, prompt(40_000))[1]["x-prfaas-prefill"] == "pool"
    fallbacks = metric(r + "/metrics", "prfaas_router_fallbacks_total", cause="link")
    assert http_post_json(link + "/link", {"up": False})[0] == 200
    try:
        results = _burst(r, 6, 40_000)
        assert [s for s, _ in results] == [200] * 6
        assert all(where == "local" for _, where in results)
        assert metric(r + "/metrics", "prfaas_router_fallbacks_total", cause="link") > fallbacks
        assert metric(r + "/metrics", "prfaas_router_link_up", pool=POOL) == 0
    finally:
        http_post_json(link + "/link", {"up": True})
    # the probe is an SGLang pair too: a 1-token prefill on the pool, pulled over the link
    deadline = time.monotonic() + 2 + 0.5 + 3
    while metric(r + "/metrics", "prfaas_router_link_up", pool=POOL) != 1:
        assert time.monotonic() < deadline, "the link was not probed back"
        time.sleep(0.1)
    assert gen(r, prompt(40_000))[1]["x-prfaas-prefill"] == "pool"


def test_a_hung_pool_engine_fails_open_within_its_prefill_bound(
    cluster: Cluster, tmp_path: Path
) -> None:
    """SIGSTOP: the pool engine accepts connections and never answers. With no scrape in
    between (a second router scraping every 60 s), the prefill bound ends the SGLang pair: the
    decode half waiting on the room is let go, the request is prefilled locally."""
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(cluster.policy(1)))
    args = ["--policy-file", str(path), "--speedup", str(SPEEDUP), "--scrape-interval", "60"]
    router = cluster.stack.router(args, "router-hung", "/readyz")
    m = router.url + "/metrics"
    cluster.pool.proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        status, headers, _ = gen(router.url, prompt(40_000))
        took = time.monotonic() - t0
        assert status == 200 and headers["x-prfaas-prefill"] == "local"
        assert took < 4.0, took  # without the bound: until SIGCONT
        assert metric(m, "prfaas_router_timeouts_total", phase="prefill") == 1
        assert metric(m, "prfaas_router_fallbacks_total", cause="pool") == 1
        engines = json.loads(http_get(router.admin_url + "/policy")[1])["engines"]
        in_flight = [engines[e.url]["inFlight"] for e in cluster.decode]
        assert in_flight == [0, 0]  # the decode half of the failed pair was let go
    finally:
        cluster.pool.proc.send_signal(signal.SIGCONT)
    router.proc.stop()


def test_killing_the_pool_sends_everything_local_without_failures(cluster: Cluster) -> None:
    """Last: it stops the pool engine."""
    r = cluster.router.url
    cluster.pool.proc.stop()
    results = _burst(r, 6, 40_000)
    assert [s for s, _ in results] == [200] * 6
    assert all(where == "local" for _, where in results)
