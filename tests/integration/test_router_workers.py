"""``prfaas router --workers N``: N processes on one port (SO_REUSEPORT), metrics as one.

Real processes on 127.0.0.1: one local prefill and one decode engine, the router with two
workers. Connections spread over the workers (each answers some), ``/metrics`` on the shared
port shows the pod's totals whichever worker answers, and a worker that dies ends the router
(so its pod restarts whole) instead of leaving it short of a worker.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from prfaas_dev.http import http_get
from prfaas_dev.stack import Engine, Service, Stack

pytestmark = pytest.mark.integration

SPEEDUP = 20.0
MODEL = "sim-model"


@dataclass
class Setup:
    stack: Stack
    local: Engine
    decode: Engine
    other: Engine  # a second decode engine, for one that leaves


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with Stack(tmp_path_factory.mktemp("router-workers-logs")) as stack:
        local = stack.engine("prefill", "h20", SPEEDUP)
        decode = stack.engine("decode", "h20", SPEEDUP)
        other = stack.engine("decode", "h20", SPEEDUP)
        yield Setup(stack, local, decode, other)


def start(s: Setup, workers: int) -> Service:
    return s.stack.prfaas_router([s.local], [s.decode], [], None, ["--workers", str(workers)])


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def metrics_dir(pid: int) -> Path:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    raw = next(v for v in env if v.startswith(b"PROMETHEUS_MULTIPROC_DIR="))
    return Path(raw.split(b"=", 1)[1].decode())


def metric(url: str, name: str) -> float:
    _, body = http_get(url + "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        series, _, value = line.rpartition(" ")
        if not line.startswith("#") and series.split("{")[0] == name:
            total += float(value)
    return total


def completion(url: str, k: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=30)
    body = {"model": MODEL, "prompt": list(range(k * 10_000, k * 10_000 + 500)), "max_tokens": 2}
    try:  # a new connection each time: the kernel spreads connections, not requests
        conn.request(
            "POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"}
        )
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def served_by(directory: Path, pid: int) -> float:
    """Requests routed by worker ``pid``, from its own metrics file."""
    files = [str(f) for f in directory.glob(f"counter_{pid}.db")]
    total = 0.0
    for family in MultiProcessCollector.merge(files, accumulate=False):
        if family.name == "prfaas_router_requests":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


def test_workers_share_the_port_and_report_as_one(setup: Setup) -> None:
    router = start(setup, 2)
    workers = children(router.proc.pid)
    assert len(workers) == 2, workers
    statuses = [completion(router.url, k) for k in range(40)]
    assert statuses == [200] * 40
    # the pod's totals on the shared port, whichever worker answers the scrape
    for _ in range(4):
        assert metric(router.url, "prfaas_router_requests_total") == 40
    directory = metrics_dir(workers[0])
    by_worker = [served_by(directory, pid) for pid in workers]
    assert sum(by_worker) == 40 and all(n > 0 for n in by_worker), by_worker
    # a gauge of health combines as the worst, not as a sum of two workers' ones
    time.sleep(1.5)
    assert metric(router.url, "prfaas_router_engine_up") == 2  # two engines, each up once
    router.proc.stop()
    assert not directory.exists()  # the parent cleans up its metrics directory


def test_a_worker_that_dies_ends_the_router(setup: Setup) -> None:
    router = start(setup, 2)
    workers = children(router.proc.pid)
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 35
    while router.proc.alive():
        assert time.monotonic() < deadline, "the router kept running short of a worker"
        time.sleep(0.1)
    assert router.proc.popen is not None and router.proc.popen.returncode != 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert "a router worker exited" in router.proc.tail(50)


def endpoints_in(url: str, name: str) -> set[str]:
    """The ``endpoint`` label values of ``name``'s series in one scrape."""
    _, body = http_get(url + "/metrics")
    out = set()
    for line in body.decode().splitlines():
        if line.startswith(name + "{") and 'endpoint="' in line:
            out.add(line.split('endpoint="', 1)[1].split('"', 1)[0])
    return out


def test_an_engine_that_left_leaves_the_metrics_of_every_worker(setup: Setup) -> None:
    """prometheus_client's multiprocess files cannot forget a series: without a filter, a
    departed engine's last values (up, queue, in flight) stayed on ``/metrics`` for good."""
    router = setup.stack.prfaas_router(
        [setup.local], [setup.decode, setup.other], [], None, ["--workers", "2"]
    )
    assert len(children(router.proc.pid)) == 2
    gone = setup.other.url
    deadline = time.monotonic() + 20
    while gone not in endpoints_in(router.url, "prfaas_router_engine_up"):
        assert time.monotonic() < deadline, "the second decode engine was never scraped"
        time.sleep(0.2)
    assert [completion(router.url, k) for k in range(20)] == [200] * 20  # both workers busy
    cmdline = Path(f"/proc/{router.proc.pid}/cmdline").read_bytes().split(b"\0")
    policy_file = Path(cmdline[cmdline.index(b"--policy-file") + 1].decode())
    policy = json.loads(policy_file.read_text())
    policy["version"] += 1
    policy["decodeEndpoints"] = [setup.decode.url]
    policy_file.write_text(json.dumps(policy))
    names = ["prfaas_router_engine_up", "prfaas_router_engine_waiting",
             "prfaas_router_engine_in_flight", "prfaas_router_engine_draining"]  # fmt: skip
    # every worker re-reads the file (1 s) and its next scrape tick forgets the engine; then
    # eight scrapes in a row (landing on either worker) show none of its series
    clean, deadline = 0, time.monotonic() + 10
    while clean < 8:
        assert time.monotonic() < deadline, "a departed engine's series stayed on /metrics"
        seen = [n for n in names if gone in endpoints_in(router.url, n)]
        clean = 0 if seen else clean + 1
        time.sleep(0 if clean else 0.2)
    # the engines that stayed are still reported
    assert setup.decode.url in endpoints_in(router.url, "prfaas_router_engine_up")
    assert metric(router.url, "prfaas_router_engine_up") == 2
    router.proc.stop()
