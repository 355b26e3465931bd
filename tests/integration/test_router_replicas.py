"""Router replicas behave as one on the link: three ``prfaas router`` processes behind a
round-robin client keep the shaped link's egress within its budget, as one router does, and
offload the same share, a link drop included.

Each replica reads the link's load from the pool side (the pool engines' KV offered/pending
series, ``prfaas.router.linkload``), not from its own third of the traffic. Units: the router
meters nominal KV bytes per wall-clock second; with the engines at ``SPEEDUP`` that is
``SPEEDUP`` times the nominal rate, so the budget and the link's capacity below are in those
units (a ``prfaas link --gbps 3`` at speedup 20 carries 60).

Load: a steady stream of prompts all longer than t (30K-80K tokens), more KV than the budget
allows if all were offloaded (about 2x): the routers must raise their effective threshold to
hold the link to its budget. One pool engine (H200), three local prefill engines (H20, enough
for what stays local), two decode engines. Measured over the last part of each run, after the
adaptation has settled; the link is cut for a few seconds in the middle of it.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from prfaas_dev.http import http_get, http_post_json
from prfaas_dev.ports import free_port
from prfaas_dev.stack import Engine, Service, Stack

pytestmark = pytest.mark.integration

SPEEDUP = 20.0
T = 19_400
MODEL = "sim-model"
POOL = "h200-pool"
BUDGET_GBPS = 25.0  # the policy's link budget (router units, see above)
LINK_GBPS = 3.0  # the shaped link: 3 x SPEEDUP = 60 router Gbps, room to overrun the budget
KV_BYTE_SCALE = 1e-3  # the engines' and the link's default: wire bytes per nominal byte
RATE = 5.0  # requests per second: ~42 router Gbps of KV if all were offloaded
LENGTHS = tuple(range(20_000, 80_001, 5_000))  # all > t; a raised t_eff takes some
WARMUP_S, MEASURE_S = 10.0, 50.0
CUT_AT_S, CUT_FOR_S = 20.0, 4.0  # into the measured window
EGRESS_TOLERANCE = 0.1  # the measured egress may exceed the budget by this fraction
SHARE_TOLERANCE = 0.15  # offload shares, one router vs three, absolute


@dataclass
class Setup:
    stack: Stack
    pool: Engine
    local: list[Engine]
    decode: list[Engine]
    link: Service


@dataclass
class Run:
    sent: list[tuple[float, int, str]] = field(default_factory=list)  # (at, status, target)
    egress_gbps: float = 0.0  # over the measured window, at the link
    offloaded: float = 0.0  # share of the measured window's requests prefilled in the pool


_next = [0]


def prompt(tokens: int) -> list[int]:
    _next[0] += 1
    base = _next[0] * 1_000_000
    return list(range(base, base + tokens))


def post(url: str, tokens: list[int]) -> tuple[int, str]:
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = json.dumps({"model": MODEL, "prompt": tokens, "max_tokens": 4}).encode()
    try:
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        return r.status, r.getheader("X-PrfaaS-Prefill") or ""
    finally:
        conn.close()


def link_bytes(link: Service) -> float:
    _, body = http_get(link.url + "/metrics")
    for line in body.decode().splitlines():
        if line.startswith("prfaas_link_bytes_total "):
            return float(line.split()[1])
    raise AssertionError("the link exports no prfaas_link_bytes_total")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    logs = tmp_path_factory.mktemp("router-replicas-logs")
    with Stack(logs) as stack:
        lp, kv = free_port(), free_port()
        pool = stack.engine("prefill", "h200", SPEEDUP, kv_port=kv, kv_advertise=("127.0.0.1", lp))
        link = stack.link({lp: ("127.0.0.1", kv)}, LINK_GBPS, 10, SPEEDUP)
        local = [stack.engine("prefill", "h20", SPEEDUP) for _ in range(3)]
        decode = [stack.engine("decode", "h20", SPEEDUP) for _ in range(2)]
        yield Setup(stack, pool, local, decode, link)


def routers(s: Setup, n: int) -> list[Service]:
    args = ["--model", MODEL, "--speedup", str(SPEEDUP), "--link-retry", "1"]
    pools = [(POOL, [s.pool], BUDGET_GBPS)]
    return [s.stack.prfaas_router(s.local, s.decode, pools, T, args) for _ in range(n)]


def drive(s: Setup, urls: Sequence[str]) -> Run:
    """``RATE`` requests per second, round-robin over ``urls``, for the warm-up and the measured
    window; the link is cut for ``CUT_FOR_S`` during the latter."""
    run, lock = Run(), threading.Lock()
    start = time.monotonic()
    measure_from, measure_to = start + WARMUP_S, start + WARMUP_S + MEASURE_S
    marks: dict[str, tuple[float, float]] = {}

    def one(k: int) -> None:
        at = time.monotonic()
        status, target = post(urls[k % len(urls)], prompt(LENGTHS[k % len(LENGTHS)]))
        with lock:
            run.sent.append((at, status, target))

    with ThreadPoolExecutor(64) as pool:
        k = 0
        while (now := time.monotonic()) < measure_to:
            if "from" not in marks and now >= measure_from:
                marks["from"] = (now, link_bytes(s.link))
            if "cut" not in marks and now >= measure_from + CUT_AT_S:
                assert http_post_json(s.link.url + "/link", {"up": False})[0] == 200
                marks["cut"] = (now, 0.0)
            if "up" not in marks and now >= measure_from + CUT_AT_S + CUT_FOR_S:
                assert http_post_json(s.link.url + "/link", {"up": True})[0] == 200
                marks["up"] = (now, 0.0)
            pool.submit(one, k)
            k += 1
            time.sleep(max(0.0, start + k / RATE - time.monotonic()))
        t0, b0 = marks["from"]
        t1, b1 = time.monotonic(), link_bytes(s.link)
    run.egress_gbps = (b1 - b0) / KV_BYTE_SCALE * 8 / 1e9 / (t1 - t0)
    window = [target for at, _, target in run.sent if measure_from <= at < measure_to]
    run.offloaded = window.count("pool") / len(window)
    return run


def test_three_replicas_hold_the_link_to_its_budget_as_one_router_does(setup: Setup) -> None:
    one = routers(setup, 1)
    single = drive(setup, [r.url for r in one])
    for r in one:
        r.proc.stop()
    three = routers(setup, 3)
    replicas = drive(setup, [r.url for r in three])
    print(
        f"one router: egress {single.egress_gbps:.1f} Gbps, offloaded {single.offloaded:.2f}; "
        f"three: egress {replicas.egress_gbps:.1f} Gbps, offloaded {replicas.offloaded:.2f} "
        f"(budget {BUDGET_GBPS:g})"
    )
    for run in (single, replicas):
        assert all(status == 200 for _, status, _ in run.sent)  # the cut failed open
        assert 0 < run.offloaded < 1  # the budget binds: some go out, not all
        assert run.egress_gbps <= BUDGET_GBPS * (1 + EGRESS_TOLERANCE)
    assert abs(replicas.offloaded - single.offloaded) <= SHARE_TOLERANCE
    # every replica saw the whole link, not its own third: their utilisations agree
    utils = [
        json.loads(http_get(r.admin_url + "/policy")[1])["pools"][0]["linkUtilisation"]
        for r in three
    ]
    assert max(utils) - min(utils) <= 0.2 * max(max(utils), 0.1), utils
