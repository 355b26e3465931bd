"""``prfaas router`` over real HTTP: placement by threshold and prefix cache, streaming, bad
input, and fail-open when the link or the PrefillPool goes away.

A 'PrefillPool' of two H200-profile prefill engines behind a shaped ``prfaas link``, a 'PD
cluster' of one H20 prefill and two H20 decode engines, the router in front with a policy file
(t = 19,400 tokens, the case study's plan). All real processes on 127.0.0.1, timing of the case
study divided by 20.
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
from prfaas_dev.stack import Engine, Service, Stack

pytestmark = pytest.mark.integration

SPEEDUP = 20.0
T = 19_400
MODEL = "sim-model"


@dataclass
class Cluster:
    stack: Stack
    pool: list[Engine]
    local: Engine
    decode: list[Engine]
    link: Service
    router: Service
    policy_file: Path

    def policy(self, version: int, threshold: int | None = T, **extra: Any) -> dict[str, Any]:
        doc = {
            "version": version,
            "thresholdTokens": threshold,
            "prefillPools": [
                {
                    "name": "h200-pool",
                    "endpoints": [e.url for e in self.pool],
                    "linkBudgetGbps": 100.0,
                }
            ],
            "prefillEndpoints": [self.local.url],
            "decodeEndpoints": [e.url for e in self.decode],
        }
        doc.update(extra)
        return doc


_next = [0]


def prompt(tokens: int) -> list[int]:
    """A fresh prompt (no shared prefix with any other test's)."""
    _next[0] += 1
    base = _next[0] * 1_000_000
    return list(range(base, base + tokens))


def complete(
    url: str, body: dict[str, Any], timeout: float = 60
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=timeout)
    path = body.pop("_path", "/v1/completions")
    raw = body.pop("_raw", None)
    data = raw if raw is not None else json.dumps(body).encode()
    conn.request("POST", path, data, {"Content-Type": "application/json"})
    r = conn.getresponse()
    out = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, out


def gen(
    url: str, tokens: list[int], max_tokens: int = 4, **kw: Any
) -> tuple[int, dict[str, str], bytes]:
    return complete(url, {"model": MODEL, "prompt": tokens, "max_tokens": max_tokens, **kw})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    logs = tmp_path_factory.mktemp("router-logs")
    with Stack(logs) as stack:
        routes = {free_port(): free_port() for _ in range(2)}  # link port -> engine KV port
        pool = [
            stack.engine("prefill", "h200", SPEEDUP, kv_port=kv, kv_advertise=("127.0.0.1", lp))
            for lp, kv in routes.items()
        ]
        link = stack.link({lp: ("127.0.0.1", kv) for lp, kv in routes.items()}, 100, 10, SPEEDUP)
        local = stack.engine("prefill", "h20", SPEEDUP)
        decode = [stack.engine("decode", "h20", SPEEDUP) for _ in range(2)]
        policy_file = logs / "policy.json"
        c = Cluster(stack, pool, local, decode, link, None, policy_file)  # type: ignore[arg-type]
        policy_file.write_text(json.dumps(c.policy(1)))
        c.router = stack.router(
            [
                "--policy-file",
                str(policy_file),
                "--model",
                MODEL,
                "--scrape-interval",
                "0.5",
                "--link-retry",
                "2",
                "--max-body-mb",
                "1",
            ],
            "router",
            "/readyz",
        )
        yield c


def metric(url: str, name: str, **labels: str) -> float:
    return scrape_labelled(url, name, labels)


def scrape_labelled(url: str, name: str, labels: dict[str, str]) -> float:
    _, body = http_get(url)
    total = 0.0
    for line in body.decode().splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def test_long_prompts_go_to_the_pool_and_short_ones_stay_local(cluster: Cluster) -> None:
    r = cluster.router.url
    pool_before = sum(metric(e.url + "/metrics", "vllm:prompt_tokens_total") for e in cluster.pool)
    link_before = metric(cluster.link.url + "/metrics", "prfaas_link_bytes_total")
    for n, where in ((1_000, "local"), (T - 100, "local"), (T + 2_000, "pool"), (60_000, "pool")):
        status, headers, body = gen(r, prompt(n))
        assert status == 200, body
        assert headers["x-prfaas-prefill"] == where, (n, headers)
        assert json.loads(body)["choices"][0]["text"] == expected_text(4)
    pool_after = sum(metric(e.url + "/metrics", "vllm:prompt_tokens_total") for e in cluster.pool)
    assert pool_after - pool_before == (T + 2_000) + 60_000  # only the long ones ran there
    # their KVCache crossed the shaped link, and the router metered it
    assert metric(cluster.link.url + "/metrics", "prfaas_link_bytes_total") > link_before
    assert metric(r + "/metrics", "prfaas_router_link_bytes_total", pool="h200-pool") > 0
    assert metric(r + "/metrics", "prfaas_router_requests_total", target="pool") >= 2


def test_a_cached_prefix_keeps_a_long_prompt_local(cluster: Cluster) -> None:
    """Paper §3.3: the decision is on the *uncached* length. 16K cached locally + 8K new is
    24K tokens (> t) but only 8K to compute: local. The same 24K without the cache goes out."""
    r = cluster.router.url
    head = prompt(16_384)
    assert gen(r, head)[1]["x-prfaas-prefill"] == "local"
    hits_before = metric(cluster.local.url + "/metrics", "vllm:prefix_cache_hits_total")
    status, headers, _ = gen(r, head + prompt(8_000))
    assert status == 200
    assert (headers["x-prfaas-prefill"], headers["x-prfaas-reason"]) == ("local", "short")
    hits = metric(cluster.local.url + "/metrics", "vllm:prefix_cache_hits_total")
    assert hits - hits_before == 16_384  # the engine really reused it
    assert gen(r, prompt(24_384))[1]["x-prfaas-prefill"] == "pool"
    # the decision API agrees, and says why; the engines' URLs only on the admin port
    ask = {"model": MODEL, "prompt": head + prompt(9_000)}
    status, body = http_post_json(r + "/v1/route", ask)
    d = json.loads(body)
    assert status == 200 and "prefill" not in d and "decode" not in d
    assert d["target"] == "local" and d["cachedTokens"] == 16_384
    status, body = http_post_json(f"{cluster.router.admin_url}/v1/route", ask)
    d = json.loads(body)
    assert status == 200 and d["target"] == "local"
    assert d["prefill"] == cluster.local.url and d["decode"] in [e.url for e in cluster.decode]


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_streamed_tokens_arrive_intact(cluster: Cluster, path: str) -> None:
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 300,
        "stream": True,
        "_path": path,
        "stream_options": {"include_usage": True},
    }
    if path.endswith("chat/completions"):
        body["messages"] = [{"role": "user", "content": "x" * 100_000}]  # ~25K tokens: pool
    else:
        body["prompt"] = prompt(30_000)
    status, headers, raw = complete(cluster.router.url, body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert headers["x-prfaas-prefill"] == "pool"
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


def test_bad_input_gets_its_status(cluster: Cluster) -> None:
    r = cluster.router.url
    cases = [
        ({"_raw": b"{not json"}, 400, "invalid_json"),
        ({"model": MODEL, "max_tokens": 4}, 400, "invalid_request"),  # no prompt
        ({"model": MODEL, "prompt": "hi", "max_tokens": 0}, 400, "invalid_request"),
        ({"model": MODEL, "prompt": "hi", "stream": "yes"}, 400, "invalid_request"),
        ({"model": "gpt-unknown", "prompt": "hi"}, 404, "model_not_found"),
        ({"model": MODEL, "prompt": "x" * (2 << 20)}, 413, "body_too_large"),
    ]
    for body, status, code in cases:
        got, headers, raw = complete(r, dict(body))
        assert got == status, (body.keys(), got, raw[:200])
        assert headers["content-type"].startswith("application/json")
        assert json.loads(raw)["error"]["code"] == code
    status, _, raw = complete(r, {"_path": "/v1/chat/completions", "model": MODEL, "messages": []})
    assert status == 400 and "messages" in json.loads(raw)["error"]["message"]
    assert metric(r + "/metrics", "prfaas_router_errors_total", code="model_not_found") >= 1


def test_client_disconnect_cancels_the_decode(cluster: Cluster) -> None:
    r = cluster.router.url
    before = sum(metric(e.url + "/metrics", "vllm:generation_tokens_total") for e in cluster.decode)
    conn = http.client.HTTPConnection("127.0.0.1", int(r.rsplit(":", 1)[1]), timeout=30)
    body = {"model": MODEL, "prompt": prompt(500), "max_tokens": 20_000, "stream": True}
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.read1(256)  # streaming has started
    conn.sock.close()  # the client goes away mid-answer
    conn.close()

    def running() -> float:
        return sum(metric(e.url + "/metrics", "vllm:num_requests_running") for e in cluster.decode)

    deadline = time.monotonic() + 10
    while running() > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running() == 0
    made = (
        sum(metric(e.url + "/metrics", "vllm:generation_tokens_total") for e in cluster.decode)
        - before
    )
    assert made < 20_000 / 2  # 20,000 tokens take 25 s here: it stopped early


def test_policy_file_changes_are_picked_up_and_bad_endpoints_dropped(cluster: Cluster) -> None:
    r = cluster.router.url
    rogue = "ftp://10.0.0.1/x"
    cluster.policy_file.write_text(
        json.dumps(
            cluster.policy(
                2, threshold=50_000, decodeEndpoints=[*[e.url for e in cluster.decode], rogue]
            )
        )
    )
    deadline = time.monotonic() + 10
    while metric(r + "/metrics", "prfaas_router_policy_version") != 2:
        assert time.monotonic() < deadline, "policy v2 not picked up"
        time.sleep(0.2)
    seen = json.loads(http_get(f"{cluster.router.admin_url}/policy")[1])
    assert seen["thresholdTokens"] == 50_000 and rogue not in seen["decodeEndpoints"]
    assert gen(r, prompt(30_000))[1]["x-prfaas-prefill"] == "local"  # 30K < new t
    # a broken edit is ignored: the last good policy keeps running
    cluster.policy_file.write_text("{version: [")
    time.sleep(1.5)
    assert metric(r + "/metrics", "prfaas_router_policy_version") == 2
    cluster.policy_file.write_text(json.dumps(cluster.policy(3)))
    while metric(r + "/metrics", "prfaas_router_policy_version") != 3:
        assert time.monotonic() < deadline + 5, "policy v3 not picked up"
        time.sleep(0.2)


def _burst(url: str, n: int, tokens: int) -> list[tuple[int, str]]:
    with ThreadPoolExecutor(n) as ex:
        results = list(ex.map(lambda _: gen(url, prompt(tokens)), range(n)))
    return [(s, h.get("x-prfaas-prefill", "")) for s, h, _ in results]


def test_cutting_the_link_sends_everything_local_without_failures(cluster: Cluster) -> None:
    r, link = cluster.router.url, cluster.link.url
    assert gen(r, prompt(40_000))[1]["x-prfaas-prefill"] == "pool"
    fallbacks = metric(r + "/metrics", "prfaas_router_fallbacks_total", cause="link")
    assert http_post_json(link + "/link", {"up": False})[0] == 200
    try:
        results = _burst(r, 6, 40_000)
        assert [s for s, _ in results] == [200] * 6
        assert all(where == "local" for _, where in results)
        assert metric(r + "/metrics", "prfaas_router_fallbacks_total", cause="link") > fallbacks
        assert metric(r + "/metrics", "prfaas_router_link_up", pool="h200-pool") == 0
    finally:
        http_post_json(link + "/link", {"up": True})
    # --link-retry 2: the router probes the link (a 1-token prefill on the pool, its KVCache
    # pulled by a decode engine) every 2 s; the first probe after the repair brings it back
    deadline = time.monotonic() + 2 + 0.5 + 1.5
    while metric(r + "/metrics", "prfaas_router_link_up", pool="h200-pool") != 1:
        assert time.monotonic() < deadline, "the link was not probed back"
        time.sleep(0.1)
    assert metric(r + "/metrics", "prfaas_router_link_probes_total", result="ok") >= 1
    assert gen(r, prompt(40_000))[1]["x-prfaas-prefill"] == "pool"


def side_router(c: Cluster, tmp: Path, name: str, *args: str, **policy: Any) -> Service:
    """Another router on this cluster's engines: its own policy and options (``--speedup``
    makes its phase bounds those of these time-scaled engines)."""
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(c.policy(1, **policy)))
    argv = ["--policy-file", str(path), "--speedup", str(SPEEDUP), *args]
    return c.stack.router(argv, name, "/readyz")


def _sent_while_scrapes_fail(router: Service, slow: Engine) -> int:
    """The status of one request sent while ``slow`` (stopped: the kernel accepts connections,
    nothing answers) has missed its scrapes, resumed right after the request left."""
    assert gen(router.url, prompt(1_000))[0] == 200
    slow.proc.send_signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 10
        while metric(router.url + "/metrics", "prfaas_router_engine_up", endpoint=slow.url) != 0:
            assert time.monotonic() < deadline, "the stopped engine was never marked down"
            time.sleep(0.1)
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(gen, router.url, prompt(1_000))
            time.sleep(0.2)
            slow.proc.send_signal(signal.SIGCONT)
            return answer.result(timeout=60)[0]
    finally:
        slow.proc.send_signal(signal.SIGCONT)


def test_decode_that_only_misses_scrapes_still_serves_as_a_last_resort(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A saturated host: every scrape of the only decode engine times out while it could still
    serve. The router must not answer a certain 503 (it did): it tries the engine anyway."""
    slow = cluster.stack.engine("decode", "h20", SPEEDUP)
    router = side_router(cluster, tmp_path, "router-slow-decode", "--scrape-interval", "0.5",
                         decodeEndpoints=[slow.url])  # fmt: skip
    assert _sent_while_scrapes_fail(router, slow) == 200
    slow.proc.kill()  # gone (connection refused): no last resort, a clear 503 again
    deadline = time.monotonic() + 10
    while gen(router.url, prompt(1_000))[0] != 503:
        assert time.monotonic() < deadline, "a refused engine was still tried"
        time.sleep(0.2)
    router.proc.stop()


def test_local_prefill_that_only_misses_scrapes_still_serves_as_a_last_resort(
    cluster: Cluster, tmp_path: Path
) -> None:
    """As for decode: the only local prefill engine too loaded to answer scrapes, no pool to
    fail over to; the router tried nothing and answered 503 no_prefill before."""
    slow = cluster.stack.engine("prefill", "h20", SPEEDUP)
    router = side_router(cluster, tmp_path, "router-slow-prefill", "--scrape-interval", "0.5",
                         prefillEndpoints=[slow.url], prefillPools=[])  # fmt: skip
    assert _sent_while_scrapes_fail(router, slow) == 200
    router.proc.stop()
    slow.proc.stop()


def test_a_pool_that_dies_whole_between_scrapes_still_fails_open_to_local(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Three pool engines die at once, before the router's next scrape: each failed attempt
    may pick the next pool engine, so the last attempt must be local prefill (it was not:
    502 prefill_failed after three dead pool engines)."""
    doomed = [cluster.stack.engine("prefill", "h200", SPEEDUP) for _ in range(3)]
    pool = {"name": "doomed", "endpoints": [e.url for e in doomed], "linkBudgetGbps": 100.0}
    router = side_router(cluster, tmp_path, "router-doomed-pool", "--scrape-interval", "60",
                         prefillPools=[pool])  # fmt: skip
    for e in doomed:
        e.proc.kill()
    status, headers, _ = gen(router.url, prompt(40_000))
    assert status == 200 and headers["x-prfaas-prefill"] == "local"
    assert metric(router.url + "/metrics", "prfaas_router_fallbacks_total", cause="pool") == 2
    router.proc.stop()


def test_a_dead_decode_is_retried_on_another_and_then_a_clear_503(
    cluster: Cluster, tmp_path: Path
) -> None:
    doomed = cluster.stack.engine("decode", "h20", SPEEDUP)
    good = cluster.stack.engine("decode", "h20", SPEEDUP)
    router = side_router(cluster, tmp_path, "router-dead-decode", "--scrape-interval", "60",
                         decodeEndpoints=[doomed.url, good.url])  # fmt: skip
    assert gen(router.url, prompt(1_000))[0] == 200
    doomed.proc.kill()  # between scrapes: the router learns it from a request
    for _ in range(4):  # ties between decode engines go round: one of these picks the dead one
        status, _, raw = gen(router.url, prompt(1_000), stream=True)
        assert status == 200 and raw.endswith(b"data: [DONE]\n\n"), raw[-200:]
    assert metric(router.url + "/metrics", "prfaas_router_decode_retries_total") == 1
    good.proc.kill()  # now no decode is left: a clear 503, before any prefill work
    status, _, raw = gen(router.url, prompt(1_000))
    assert status == 503 and json.loads(raw)["error"]["code"] == "no_decode"
    assert http_get(router.url + "/readyz")[0] == 503
    router.proc.stop()


def test_a_stream_cut_mid_answer_ends_with_an_error_event(cluster: Cluster, tmp_path: Path) -> None:
    doomed = cluster.stack.engine("decode", "h20", SPEEDUP)
    router = side_router(cluster, tmp_path, "router-cut", decodeEndpoints=[doomed.url])
    conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=30)
    body = {"model": MODEL, "prompt": prompt(500), "max_tokens": 20_000, "stream": True}
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    head = resp.read1(4096)
    assert b"tok0" in head  # tokens have reached the client: no retry possible any more
    doomed.proc.kill()
    raw = head + resp.read()
    conn.close()
    events = [e for e in raw.decode().split("\n\n") if e]
    assert "data: [DONE]" not in events
    err = json.loads(events[-1].removeprefix("data: "))["error"]
    assert err["code"] == "decode_failed" and "cut short" in err["message"]
    assert all("choices" in json.loads(e.removeprefix("data: ")) for e in events[:-1])
    assert metric(router.url + "/metrics", "prfaas_router_broken_streams_total") == 1
    router.proc.stop()


def test_a_burst_spreads_over_the_decode_engines(cluster: Cluster) -> None:
    """40 requests at once: decode is chosen when phase 2 starts and counted from the pick, so
    they spread before any scrape could see them (a scraped queue lags behind a burst)."""

    def decodes() -> list[float]:
        return [metric(e.url + "/metrics", "prfaas_engine_requests_total", phase="decode")
                for e in cluster.decode]  # fmt: skip

    before = decodes()
    with ThreadPoolExecutor(40) as ex:  # 2,000 tokens take 2.5 s: all 40 overlap
        results = list(ex.map(lambda _: gen(cluster.router.url, prompt(500), 2_000), range(40)))
    assert [s for s, _, _ in results] == [200] * 40
    counts = [a - b for a, b in zip(decodes(), before, strict=True)]
    assert sum(counts) == 40 and max(counts) - min(counts) <= 2, counts


def test_a_hung_pool_engine_is_left_after_its_prefill_bound(
    cluster: Cluster, tmp_path: Path
) -> None:
    """SIGSTOP: the engine accepts connections and never answers. Between this router's
    scrapes only the prefill bound (1 s + 3 × the H200 profile's time for 40K tokens / 20)
    saves the request; the engine is then avoided until it answers a scrape."""
    hung = cluster.pool[0]
    router = side_router(cluster, tmp_path, "router-hung", "--scrape-interval", "60",
                         prefillPools=[{"name": "h200-pool", "endpoints": [hung.url],
                                        "linkBudgetGbps": 100.0}])  # fmt: skip
    hung.proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        status, headers, _ = gen(router.url, prompt(40_000))
        took = time.monotonic() - t0
        assert status == 200 and headers["x-prfaas-prefill"] == "local"
        assert took < 4.0, took  # without the bound: until SIGCONT
        m = router.url + "/metrics"
        assert metric(m, "prfaas_router_timeouts_total", phase="prefill") == 1
        assert metric(m, "prfaas_router_fallbacks_total", cause="pool") == 1
        t0 = time.monotonic()
        status, headers, _ = gen(router.url, prompt(40_000))  # known unhealthy: no wait
        assert (status, headers["x-prfaas-reason"]) == (200, "fail-open")
        assert time.monotonic() - t0 < 2.0
    finally:
        hung.proc.send_signal(signal.SIGCONT)
    router.proc.stop()


def test_a_stalled_link_is_left_after_the_kv_bound(cluster: Cluster, tmp_path: Path) -> None:
    """The link carries nothing (1 Mbps) but does not fail: the KVCache never arrives, decode
    waits. The first-byte bound re-prefills the request locally."""
    router = side_router(cluster, tmp_path, "router-stall", "--scrape-interval", "60")
    assert http_post_json(cluster.link.url + "/link", {"gbps": 0.001})[0] == 200
    try:
        t0 = time.monotonic()
        status, headers, _ = gen(router.url, prompt(40_000), stream=True)
        took = time.monotonic() - t0
        assert status == 200 and headers["x-prfaas-prefill"] == "local", headers
        assert took < 5.0, took
        m = router.url + "/metrics"
        assert metric(m, "prfaas_router_timeouts_total", phase="first_byte") == 1
        assert metric(m, "prfaas_router_fallbacks_total", cause="timeout") == 1
    finally:
        http_post_json(cluster.link.url + "/link", {"gbps": 100})
    router.proc.stop()


def test_a_decode_queue_is_waited_for_not_timed_out(cluster: Cluster, tmp_path: Path) -> None:
    """30 streams on one decode engine of 20 slots: 10 wait ~3 s for a slot, three times the
    first-token bound (1 s + 3 steps). The engine is alive and full, so the wait is extended."""
    dec = cluster.decode[0]
    router = side_router(cluster, tmp_path, "router-queue", decodeEndpoints=[dec.url])
    with ThreadPoolExecutor(30) as ex:
        results = list(ex.map(
            lambda _: gen(router.url, prompt(200), 2_400, stream=True), range(30)
        ))  # fmt: skip
    assert all(s == 200 and raw.endswith(b"data: [DONE]\n\n") for s, _, raw in results)
    m = router.url + "/metrics"
    assert metric(m, "prfaas_router_timeouts_total", phase="first_byte") == 0
    assert metric(m, "prfaas_router_fallbacks_total") == 0
    router.proc.stop()


def test_killing_the_pool_sends_everything_local_without_failures(cluster: Cluster) -> None:
    """Last: it stops the pool engines of this module's cluster."""
    r = cluster.router.url
    for e in cluster.pool:
        e.proc.stop()
    results = _burst(r, 6, 40_000)
    assert [s for s, _ in results] == [200] * 6
    assert all(where == "local" for _, where in results)
    time.sleep(1.2)  # the next scrape marks them down: no more attempts at all
    before = metric(r + "/metrics", "prfaas_router_fallbacks_total", cause="pool")
    status, headers, _ = gen(r, prompt(40_000))
    assert status == 200 and headers["x-prfaas-reason"] == "fail-open"
    assert metric(r + "/metrics", "prfaas_router_fallbacks_total", cause="pool") == before
