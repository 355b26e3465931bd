"""Benchmark A: what a router adds. ``prfaas router`` vs sglang-router 0.3.2 vs vllm-router 0.1.17
in P/D mode in front of the same simulated engines with ``--zero-compute`` (no prefill or
decode time, empty KV transfers), so what is left is routing, proxying and the hand-off.

Engines: 2 prefill + 2 decode, plus one ``--role both`` engine for the single-engine baseline.
``prfaas router`` runs twice: one process (one core), and ``--workers 2`` (two processes on one
port, SO_REUSEPORT), as the Rust peers use every core with their thread pools.
Every target gets the same load, one after the other:

1. open loop, our asyncio/aiohttp client: ``--rate`` req/s (default 500) for ``--duration`` s,
   non-streaming completions of ``--max-tokens`` tokens; latency is counted from each request's
   due time. **Added latency** = router p50/p99 − p50/p99 of the *same P/D flow done by the
   client straight to the engines*: vLLM's two-phase hand-off (``direct 2-phase``) for
   vllm-router and ``prfaas router`` (both run it), SGLang's bootstrap hand-off (``direct
   bootstrap``) for sglang-router.
2. closed loop: ``--concurrency`` workers back to back for ``--max-duration`` s: the highest
   request rate (client, engines and router share this machine's cores: compare the routers
   with each other and with the direct flows, not with other machines). It runs ``--rounds``
   times, the targets' order rotated each round (whoever runs first or last in a noisy stretch
   is not always the same one); the table shows the median and the range.

For each router, the CPU it spent (user + system, every thread and worker process, from
``/proc``) per request of the open loop: the router's own cost, which the machine's noise and
the client's and engines' share of the cores do not blur as they blur max req/s.
3. aiperf 0.13.0 (third party), streaming completions at a constant ``--aiperf-rate``; added
   latency there is against a direct call to the single ``--role both`` engine (aiperf cannot
   run a P/D flow itself).

    .venv/bin/python bench/router_overhead.py            # ~3 min; make bench-overhead
    .venv/bin/python bench/router_overhead.py --rate 200 --duration 5 --no-aiperf

Prints a table; writes JSON to .local/bench/router_overhead-<time>.json (and aiperf's own
artifacts next to it). Needs ``make peers``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from loadgen import (
    DirectBootstrap,
    DirectTwoPhase,
    Samples,
    Target,
    Via,
    closed_loop,
    open_loop,
    pct,
)
from prfaas_dev.http import scrape
from prfaas_dev.peers import PeersMissingError, require_all
from prfaas_dev.procs import ProcessError
from prfaas_dev.stack import Stack

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / ".local" / "bench"
WORKERS = "prfaas-router --workers 2"
BASELINE = {  # router -> the direct flow it does on the wire
    "prfaas-router": "direct 2-phase",
    WORKERS: "direct 2-phase",
    "sglang-router": "direct bootstrap",
    "vllm-router": "direct 2-phase",
}


def body(i: int, words: int, max_tokens: int) -> dict[str, Any]:
    return {"model": "sim-model", "prompt": f"r{i} " + "word " * words, "max_tokens": max_tokens}


def summary(s: Samples) -> dict[str, Any]:
    return {
        "ok": s.ok,
        "errors": s.errors,
        "first_error": s.first_error,
        "planned": s.planned,
        "achieved_rps": round(s.rate, 1),
        "latency_ms": {
            q: round(pct(s.latency, float(q[1:])) * 1e3, 3) for q in ("p50", "p90", "p99")
        },
        "client_lag_p99_ms": round(pct(s.lag, 99) * 1e3, 3) if s.lag else None,
    }


def run_aiperf(
    aiperf: Any, name: str, url: str, rate: float, duration: float, out: Path
) -> dict[str, Any]:
    art = out / f"aiperf-{name}"
    argv = [*aiperf.argv, "profile", "-m", "sim-model", "--url", url]
    argv += ["--endpoint-type", "completions", "--streaming"]
    argv += ["--tokenizer", aiperf.tokenizer, "--isl", "128", "--isl-stddev", "0", "--osl", "16"]
    argv += ["--extra-inputs", "ignore_eos:true", "--use-server-token-count"]
    argv += ["--request-rate", f"{rate:g}", "--arrival-pattern", "constant"]
    argv += ["--benchmark-duration", f"{duration:g}", "--benchmark-grace-period", "15"]
    argv += ["--ui-type", "none", "--no-server-metrics", "--no-gpu-telemetry"]
    argv += ["--artifact-dir", str(art)]
    log = out / f"aiperf-{name}.log"
    with log.open("wb") as f:
        r = subprocess.run(
            argv, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **aiperf.env(art / "tmp")},
            timeout=duration + 180, check=False,
        )  # fmt: skip
    report = art / "profile_export_aiperf.json"
    if r.returncode != 0 or not report.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        return {"error": f"aiperf exited {r.returncode}; log {log}:\n{tail}"}
    d = json.loads(report.read_text())
    lat, ttft = d["request_latency"], d["time_to_first_token"]
    return {
        "requests": int(d["request_count"]["avg"]),
        "errors": sum(int(e.get("count", 1)) for e in d.get("error_summary") or []),
        "achieved_rps": round(d["request_throughput"]["avg"], 1),
        "latency_ms": {q: round(lat[q], 3) for q in ("p50", "p90", "p99")},
        "ttft_ms": {q: round(ttft[q], 3) for q in ("p50", "p90", "p99")},
        "artifacts": str(art.relative_to(REPO)),
    }


def py_spy(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` at 200 Hz for ``seconds`` into ``out`` (``.svg``: flame graph,
    otherwise collapsed stacks); ``pip install py-spy`` first."""
    fmt = "flamegraph" if out.suffix == ".svg" else "raw"
    argv = ["py-spy", "record", "-r", "200", "-f", fmt, "-o", str(out), "-p", str(pid)]
    return subprocess.Popen([*argv, "-d", str(int(seconds) + 2)], stdout=subprocess.DEVNULL)


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds: user + system of all its threads), from ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        f = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, …
        stats[int(d.name)] = (int(f[1]), (int(f[11]) + int(f[12])) / tick)
    return stats


def _tree(pid: int, stats: dict[int, tuple[int, float]]) -> set[int]:
    tree, grew = {pid}, True
    while grew:
        more = {p for p, (parent, _) in stats.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return tree


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) of ``pid`` and its descendants, from ``/proc``."""
    stats = _proc_table()
    return sum(stats.get(p, (0, 0.0))[1] for p in _tree(pid, stats))


def pin(pid: int, cores: set[int]) -> None:
    """Every thread of ``pid`` and of its descendants on ``cores`` (threads started before this
    call included: affinity is per thread)."""
    for p in _tree(pid, _proc_table()):
        for task in Path(f"/proc/{p}/task").iterdir():
            try:
                os.sched_setaffinity(int(task.name), cores)
            except (ProcessLookupError, FileNotFoundError):  # ended meanwhile
                continue


def affinity(pid: int) -> list[int]:
    """The cores any thread of ``pid`` or of its descendants may run on."""
    cores: set[int] = set()
    for p in _tree(pid, _proc_table()):
        for task in Path(f"/proc/{p}/task").iterdir():
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                cores |= os.sched_getaffinity(int(task.name))
    return sorted(cores)


async def measure(
    targets: list[Target], args: argparse.Namespace, console: Console, pids: dict[str, int]
) -> dict[str, Any]:
    """Each target: warm-up, the open loop (``prfaas-router``'s under py-spy with
    ``--profile``; a router's CPU counted, ``pids``); then ``--rounds`` of closed loops, the
    targets' order rotated each round."""
    results: dict[str, Any] = {}
    n = int(args.rate * args.duration)
    load = [(i / args.rate, "completions", body(i, args.words, args.max_tokens), None)
            for i in range(n)]  # fmt: skip

    def make(i: int) -> tuple[str, dict[str, Any]]:
        return "completions", body(i, args.words, args.max_tokens)

    for t in targets:
        console.print(f"[bold]{t.name}[/]: warm-up, {n} requests open loop at {args.rate:g}/s")
        await open_loop(t, load[:100])
        spy = None
        if args.profile and t.name == "prfaas-router":
            spy = py_spy(pids[t.name], args.profile, args.duration)
            await asyncio.sleep(1.0)  # attached before the load starts
        cpu0 = cpu_seconds(pids[t.name]) if t.name in pids else 0.0
        ol = await open_loop(t, load)
        results[t.name] = {"open_loop": summary(ol), "closed_loop": [], "max_rps_runs": []}
        if t.name in pids and spy is None:  # py-spy's own sampling would be counted
            used = cpu_seconds(pids[t.name]) - cpu0
            results[t.name]["cpu_ms_per_request"] = round(used * 1e3 / max(1, ol.ok), 3)
        if spy is not None:
            await asyncio.to_thread(spy.wait)
            console.print(f"py-spy profile of prfaas-router: {args.profile}")
    for r in range(args.rounds):
        order = targets[r % len(targets) :] + targets[: r % len(targets)]
        console.print(f"closed loop, round {r + 1}/{args.rounds}: {args.concurrency} workers × "
                      f"{args.max_duration:g} s each, from {order[0].name}")  # fmt: skip
        for t in order:
            cl = await closed_loop(t, make, args.concurrency, args.max_duration)
            results[t.name]["closed_loop"].append(summary(cl))
            results[t.name]["max_rps_runs"].append(round(cl.rate, 1))
    for res in results.values():
        res["max_rps"] = statistics.median(res["max_rps_runs"])
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop req/s")
    parser.add_argument("--duration", type=float, default=10.0, help="open-loop seconds")
    parser.add_argument("--concurrency", type=int, default=64, help="closed-loop workers")
    parser.add_argument("--max-duration", type=float, default=5.0, help="closed-loop seconds")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--words", type=int, default=100, help="prompt length in words")
    parser.add_argument("--aiperf-rate", type=float, default=100.0)
    parser.add_argument("--aiperf-duration", type=float, default=10.0)
    parser.add_argument("--no-aiperf", action="store_true")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record prfaas-router's open loop with py-spy into FILE (.svg: flame graph)",
    )
    parser.add_argument("--no-workers", action="store_true", help=f"skip the `{WORKERS}` target")
    parser.add_argument(
        "--rounds", type=int, default=3, help="closed-loop rounds (median max req/s; default 3)"
    )
    parser.add_argument(
        "--router-core",
        type=int,
        default=None,
        metavar="N",
        help="pin every router (all its threads and processes) to core N and this client, the "
        "engines and aiperf to the other cores: a router with a core of its own, as a router "
        "pod has; the latencies then show the router's cost without its contention with the "
        "engines (max req/s then measures the other cores as much as the router)",
    )
    args = parser.parse_args()
    cores = os.sched_getaffinity(0)
    if args.router_core is not None and (args.router_core not in cores or len(cores) < 2):
        parser.error(f"--router-core must be one of this process's cores {sorted(cores)}, "
                     "and there must be another one left for the client and engines")  # fmt: skip
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.rate * args.duration < 1 or args.concurrency < 1 or args.max_duration <= 0:
        parser.error("--rate × --duration must give at least 1 request, --concurrency and "
                     "--max-duration must be positive")  # fmt: skip
    if args.max_tokens < 1 or args.words < 0 or args.aiperf_rate <= 0 or args.aiperf_duration <= 0:
        parser.error("--max-tokens must be at least 1, --words not negative, and aiperf's "
                     "rate and duration positive")  # fmt: skip
    console = Console(width=max(Console().width, 132))
    try:
        tools = require_all()
    except PeersMissingError as e:
        console.print(f"[red]{e}[/]")
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = OUT / f"router_overhead-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    if args.router_core is not None:  # before any process starts: they inherit it
        os.sched_setaffinity(0, cores - {args.router_core})
    with Stack(out / "logs") as stack:
        try:
            pre = [stack.engine("prefill", zero_compute=True) for _ in range(2)]
            dec = [stack.engine("decode", zero_compute=True) for _ in range(2)]
            single = stack.engine("both", zero_compute=True)
            routers = {"prfaas-router": stack.prfaas_router(pre, dec)}
            if not args.no_workers:
                routers[WORKERS] = stack.prfaas_router(pre, dec, extra=["--workers", "2"])
            routers["sglang-router"] = stack.sglang_router(tools.sglang_router, pre, dec)
            routers["vllm-router"] = stack.vllm_router(tools.vllm_router, pre, dec)
        except ProcessError as e:
            console.print(f"[red]start-up failed: {e}[/]")
            return 1
        targets: list[Target] = [
            DirectTwoPhase("direct 2-phase", [e.url for e in pre], [e.url for e in dec]),
            DirectBootstrap(
                "direct bootstrap",
                [(e.url, "127.0.0.1", e.bootstrap_port) for e in pre],
                [e.url for e in dec],
            ),
            Via("direct single engine", single.url),
            *(Via(name, r.url) for name, r in routers.items()),
        ]
        pids = {name: r.proc.pid for name, r in routers.items()}
        if args.router_core is not None:
            for pid in pids.values():
                pin(pid, {args.router_core})
            console.print(f"routers on core {args.router_core}; client, engines and aiperf on "
                          f"{sorted(cores - {args.router_core})}")  # fmt: skip
        results = asyncio.run(measure(targets, args, console, pids))
        cores_used = {name: affinity(pid) for name, pid in pids.items()}
        engines = {e.url: scrape(e.url + "/metrics") for e in pre + dec}
        aip: dict[str, Any] = {}
        if not args.no_aiperf:
            for name, url in [("direct single engine", single.url)] + [
                (n, r.url) for n, r in routers.items()
            ]:
                console.print(f"[bold]aiperf[/] → {name}: {args.aiperf_rate:g} req/s constant, "
                              f"{args.aiperf_duration:g} s, streaming")  # fmt: skip
                aip[name] = run_aiperf(
                    tools.aiperf, name.replace(" ", "-"), url, args.aiperf_rate,
                    args.aiperf_duration, out,
                )  # fmt: skip
    kv_fail = sum(m.get("prfaas_engine_kv_fetch_failures_total", 0.0) for m in engines.values())
    report = {
        "benchmark": "router_overhead",
        "when": stamp,
        "cores": os.cpu_count(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "engines": "2 prefill + 2 decode + 1 both, --zero-compute",
        "baseline": BASELINE,
        "router_core": args.router_core,
        "router_cores_used": cores_used,  # read back at the end: what --router-core gave
        "kv_fetch_failures": kv_fail,
        "asyncio_client": results,
        "aiperf": aip,
    }
    for name, base in BASELINE.items():
        if name not in results:
            continue
        r, b = results[name]["open_loop"]["latency_ms"], results[base]["open_loop"]["latency_ms"]
        results[name]["added_ms"] = {q: round(r[q] - b[q], 3) for q in ("p50", "p99")}
        one = results["direct single engine"]["open_loop"]["latency_ms"]
        results[name]["added_vs_single_ms"] = {q: round(r[q] - one[q], 3) for q in ("p50", "p99")}
        if (
            name in aip
            and "latency_ms" in aip[name]
            and "latency_ms" in aip.get("direct single engine", {})
        ):
            a, s = aip[name]["latency_ms"], aip["direct single engine"]["latency_ms"]
            aip[name]["added_ms"] = {q: round(a[q] - s[q], 3) for q in ("p50", "p99")}
    report["saturated_baselines"] = saturated_baselines(results)
    path = OUT / f"router_overhead-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    print_tables(console, results, aip, args, report["saturated_baselines"])
    console.print(f"JSON: {path.relative_to(REPO)}  (process logs in {out.relative_to(REPO)})")
    bad = [
        n
        for n, r in results.items()
        if r["open_loop"]["errors"] or any(c["errors"] for c in r["closed_loop"])
    ]
    if bad or kv_fail:
        console.print(f"[red]errors in: {', '.join(bad)}; KV fetch failures: {kv_fail:g}[/]")
        return 1
    return 0


def saturated_baselines(results: dict[str, Any]) -> list[str]:
    """The direct flows some router beat (a negative added p50 or p99): a baseline that slow was
    measuring its own queueing, not the engines."""
    return sorted({
        BASELINE[n] for n, r in results.items()
        if n in BASELINE and any(v < 0 for v in r.get("added_ms", {}).values())
    })  # fmt: skip


def print_tables(
    console: Console,
    results: dict[str, Any],
    aip: dict[str, Any],
    args: argparse.Namespace,
    distorted: list[str],
) -> None:
    t = Table(title=f"Open loop {args.rate:g} req/s × {args.duration:g} s (asyncio client), "
                    f"closed loop {args.concurrency} workers; zero-compute engines")  # fmt: skip
    for col in ("target", "ok/err", "req/s", "p50 ms", "p99 ms", "added p50", "added p99",
                "vs", "vs 1 engine p50/p99", "CPU ms/req", "max req/s"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("target", "vs") else "right")
    for name, r in results.items():
        ol = r["open_loop"]
        added = r.get("added_ms", {})
        single = r.get("added_vs_single_ms", {})
        t.add_row(
            name,
            f"{ol['ok']}/{ol['errors']}",
            f"{ol['achieved_rps']:.0f}",
            f"{ol['latency_ms']['p50']:.2f}",
            f"{ol['latency_ms']['p99']:.2f}",
            f"{added['p50']:+.2f}" if added else "",
            f"{added['p99']:+.2f}" if added else "",
            BASELINE.get(name, ""),
            f"{single['p50']:+.2f} / {single['p99']:+.2f}" if single else "",
            f"{r['cpu_ms_per_request']:.3f}" if "cpu_ms_per_request" in r else "",
            f"{r['max_rps']:.0f} ({min(runs):.0f}-{max(runs):.0f})"
            if len(runs := r["max_rps_runs"]) > 1
            else f"{r['max_rps']:.0f}",
        )
    console.print(t)
    console.print(
        "added = router − the same P/D flow sent by this client straight to the engines "
        "(`vs`); `vs 1 engine` = router − one direct call to a --role both engine; CPU ms/req: "
        "the router's CPU (all threads and processes) per open-loop request; max req/s: median "
        f"(range) of {args.rounds} closed-loop round(s)"
    )
    if distorted:
        console.print(
            f"[yellow]warning: a router came out faster than the direct flow it adds to "
            f"({', '.join(distorted)}): such a flow queued on the client's cores (see its max "
            "req/s against the offered rate), so the added latencies against it are not the "
            "routers' cost; lower --rate or free a core[/]"
        )
    if not aip:
        return
    a = Table(title=f"aiperf 0.13.0: {args.aiperf_rate:g} req/s constant × "
                    f"{args.aiperf_duration:g} s, streaming, ISL 128 / OSL 16")  # fmt: skip
    for col in ("target", "requests", "errors", "req/s", "TTFT p50", "p50 ms", "p99 ms",
                "added p50", "added p99"):  # fmt: skip
        a.add_column(col, justify="left" if col == "target" else "right")
    for name, r in aip.items():
        if "error" in r:
            a.add_row(name, "failed", r["error"].splitlines()[0], *[""] * 6)
            continue
        added = r.get("added_ms", {})
        a.add_row(
            name, str(r["requests"]), str(r["errors"]), f"{r['achieved_rps']:.0f}",
            f"{r['ttft_ms']['p50']:.2f}", f"{r['latency_ms']['p50']:.2f}",
            f"{r['latency_ms']['p99']:.2f}",
            f"{added['p50']:+.2f}" if added else "", f"{added['p99']:+.2f}" if added else "",
        )  # fmt: skip
    console.print(a)
    console.print("added latency: aiperf rows vs `direct single engine` (one engine, no P/D)")


if __name__ == "__main__":
    sys.exit(main())
