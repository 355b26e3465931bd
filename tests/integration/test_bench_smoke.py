"""Both router benchmarks run end to end at a tiny size, so a change that breaks one is seen in
the suite, not by the next person who measures (Benchmark B once failed to start unseen for a
session; A's ``--profile`` run once failed writing its JSON). Their numbers are not checked here:
performance lives in ``bench/`` and the README. What is checked: each exits 0, every target
answered its requests without an error, and the JSON report says so."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _bench(script: str, *args: str, timeout: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    m = re.search(r"JSON: (\S+\.json)", out)
    assert m, out[-3000:]
    path = REPO / m.group(1)
    report: dict[str, Any] = json.loads(path.read_text())
    path.unlink()  # the smoke run's report and logs are not a measurement
    shutil.rmtree(path.with_suffix(""), ignore_errors=True)
    return report


def test_benchmark_a_runs_every_router_without_errors() -> None:
    core = max(os.sched_getaffinity(0))
    report = _bench(
        "router_overhead.py", "--rate", "100", "--duration", "1", "--concurrency", "4",
        "--max-duration", "1", "--rounds", "2", "--no-aiperf", "--no-workers",
        "--router-core", str(core), timeout=300,
    )  # fmt: skip
    results = report["asyncio_client"]
    routers = {"prfaas-router", "sglang-router", "vllm-router"}
    # --router-core: every thread of every router (the Rust peers' thread pools included) on
    # that core alone, to the end of the run
    assert report["router_cores_used"] == {name: [core] for name in routers}
    assert set(results) >= routers | {"direct 2-phase"}
    for name, r in results.items():
        assert r["open_loop"]["ok"] == 100 and r["open_loop"]["errors"] == 0, (name, r)
        assert len(r["closed_loop"]) == 2, (name, r)
        assert all(c["ok"] > 0 and c["errors"] == 0 for c in r["closed_loop"]), (name, r)
        # each router's CPU is counted (its 100 requests take tens of ms, many clock ticks),
        # and no other target has a figure
        assert (name in routers) == ("cpu_ms_per_request" in r), (name, r)
        assert name not in routers or 0 < r["cpu_ms_per_request"] < 100, (name, r)
    assert report["kv_fetch_failures"] == 0


def test_the_http_front_breakdown_measures_every_server() -> None:
    report = _bench(
        "http_front.py", "--rate", "100", "--duration", "1", "--repeats", "1", timeout=300,
    )  # fmt: skip
    cpu = report["cpu_ms_per_request"]
    assert set(cpu) == {
        "aiohttp app",
        "aiohttp low-level",
        "bare protocol",
        "prfaas front",
        "bare 2-phase proxy",
        "prfaas router",
        "sglang-router",
        "vllm-router",
    }
    # the bare 2-phase proxy does two engine calls a request: it cannot cost nothing
    assert 0 < cpu["bare 2-phase proxy"] < 100, cpu


def test_the_router_path_benchmark_runs_the_router_app() -> None:
    """In-process, no HTTP: every request answered 200 by the router's app (it raises
    otherwise), with and without phase deadlines, and a cost that is not nothing."""
    for extra in ([], ["--no-deadlines"]):
        report = _bench("router_path.py", "--requests", "200", "--rounds", "2", *extra,
                        timeout=120)  # fmt: skip
        assert len(report["runs"]) == 2 and 0 < report["us_per_request"] < 10_000, report


def test_benchmark_b_runs_both_setups_without_errors() -> None:
    report = _bench(
        "goodput.py", "--requests", "12", "--same-policies", "cache_aware", timeout=600,
    )  # fmt: skip
    results = report["results"]
    # ours, both peers on the naive setup, both peers on our engines
    assert "prfaas-router" in results and len(results) == 5, list(results)
    for name, r in results.items():
        assert r["completed"] == 12 and r["errors"] == 0, (name, r)
