"""Benchmark B: goodput under a TTFT SLO on the paper's case study, time-scaled, with real
processes: ``prfaas router`` (PrfaaS-PD) vs sglang-router and vllm-router doing plain P/D with
every prefill on the PrefillPool (the paper's naive heterogeneous baseline).

Cluster (split from ``prfaas plan -o json``; engines ``--speedup S`` times faster than real):

- PrefillPool: ``n_prfaas`` (4) h200 prefill engines whose KVCache leaves through one
  ``prfaas link`` (the scenario's capacity and RTT, same speed-up and byte scale).
- PD cluster, PrfaaS-PD: ``n_prefill`` (3) h20 PD-P + ``n_decode`` (5) h20 PD-D engines, the
  router's threshold ``t`` from the plan; pool prefills go over the link, short ones stay local.
- PD cluster, naive: the same 4 pool engines as the only prefill, ``n_decode`` of the naive plan
  (8) h20 decode engines (the PD-P machines become decode, as in the paper).

Load: Poisson arrivals at ``--rate`` case-study req/s (× S on the wall clock), prompt lengths
drawn from ``case_study().workload`` (log-normal, unique prompts: no prefix hits), 1024 output
tokens, non-streaming so the client stays cheap on 2 cores. TTFT is derived exactly from the
engine's decode model: TTFT = latency − (L_out − 1) × step / S (the simulated decode emits one
token per step once its batch slot is taken, so the rest of the latency is the time to the
first token). Reported in case-study seconds: P50/P90/P99 TTFT, goodput (requests whose
TTFT ≤ the SLO per second of arrivals), SLO attainment, share of prefills on the pool, egress.

    .venv/bin/python bench/goodput.py                    # ~2 min; make bench-goodput
    .venv/bin/python bench/goodput.py --rate 2.8 --requests 600 --slo-s 20 --speedup 20

JSON to .local/bench/goodput-<time>.json. Needs ``make peers``; without a ``prfaas router``
command only the peers run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from loadgen import Via, open_loop, pct
from peers import PeersMissingError, require_all
from prfaas.model.scenario import case_study
from prfaas.routing.tokens import BYTES_PER_TOKEN
from prfaas.sim.arrivals import sample_lengths
from procs import PRFAAS, Engine, Stack, StartError, free_port, prfaas_router_available, scrape

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / ".local" / "bench"
KV_BYTE_SCALE = 1e-3  # engines and link: 1/1000 of the nominal KV bytes go on the wire
PREFILL = 'prfaas_engine_requests_total{phase="prefill"}'
BOTH = 'prfaas_engine_requests_total{phase="prefill+decode"}'


def plan() -> dict[str, Any]:
    exe = Path(sys.executable).parent / "prfaas"
    argv = [str(exe)] if exe.exists() else PRFAAS
    out = subprocess.run([*argv, "plan", "-o", "json"], capture_output=True, check=True, text=True)
    plans: dict[str, Any] = json.loads(out.stdout)["plans"]
    return plans


def prompt(tag: str, tokens: int) -> str:
    """``tokens`` tokens as the engines count text (BYTES_PER_TOKEN bytes each), unique from the
    first block on."""
    head = f"{tag}|"
    n = tokens * BYTES_PER_TOKEN - len(head)
    return head + ("lorem ipsum dolor sit amet " * (n // 27 + 1))[: max(0, n)]


def load(
    rate: float, n: int, speedup: float, out_tokens: int, seed: int, run: str
) -> tuple[list[tuple[float, str, dict[str, Any], Any]], np.ndarray]:
    rng = np.random.default_rng(seed)
    wl = case_study().workload
    lengths = sample_lengths(wl.input_length.grid(), n, rng)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, n))  # case-study seconds
    reqs = []
    for i in range(n):
        body = {"model": "sim-model", "prompt": prompt(f"{run}-{i}", int(lengths[i])),
                "max_tokens": out_tokens}  # fmt: skip
        reqs.append((float(arrivals[i]) / speedup, "completions", body, i))
    return reqs, lengths


def drained(engines: list[Engine]) -> bool:
    for e in engines:
        m = scrape(e.url + "/metrics")
        gauges = ("vllm:num_requests_running", "vllm:num_requests_waiting")
        busy = sum(v for k, v in m.items() if k.startswith(gauges))
        if busy:
            return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2.8, help="case-study req/s (Poisson)")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--slo-s", type=float, default=20.0, help="TTFT SLO, case-study s")
    parser.add_argument("--speedup", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--routers", default="prfaas-router,sglang-router,vllm-router")
    args = parser.parse_args()
    console = Console(width=max(Console().width, 132))
    try:
        tools = require_all()
    except PeersMissingError as e:
        console.print(f"[red]{e}[/]")
        return 2
    plans = plan()
    ours, naive = plans["prfaas"], plans["naive"]
    sc = case_study()
    step = sc.pd_cluster.instance.decode.step_seconds  # type: ignore[union-attr]
    out_tokens = int(sc.workload.output_tokens)
    link_gbps = sc.link.capacity_gbps * sc.link.usable_fraction
    wanted = [r for r in args.routers.split(",") if r]
    if "prfaas-router" in wanted and not prfaas_router_available():
        console.print("[yellow]no `prfaas router` command yet: running the peers only[/]")
        wanted.remove("prfaas-router")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = OUT / f"goodput-{stamp}"
    speed = args.speedup
    console.print(
        f"plan: PrfaaS-PD {ours['n_prfaas']} pool / {ours['n_prefill']} PD-P / "
        f"{ours['n_decode']} PD-D, t = {ours['threshold_tokens']}; naive {naive['n_prfaas']} "
        f"pool / {naive['n_decode']} decode. Load {args.rate:g} req/s × {args.requests} "
        f"(case study), speed-up {speed:g}, TTFT SLO {args.slo_s:g} s"
    )
    results: dict[str, Any] = {}
    with Stack(logs) as stack:
        try:
            n_pool = int(ours["n_prfaas"])
            routes = [free_port() for _ in range(n_pool)]
            pool = [stack.engine("prefill", "h200", speed, kv_advertise=("127.0.0.1", r),
                                 kv_byte_scale=KV_BYTE_SCALE) for r in routes]  # fmt: skip
            link = stack.link(
                {r: ("127.0.0.1", e.kv_port) for r, e in zip(routes, pool, strict=True)},
                link_gbps, sc.link.rtt_ms, speed, KV_BYTE_SCALE,
            )  # fmt: skip
            n_dec = max(int(ours["n_decode"]), int(naive["n_decode"]))
            local_p = [stack.engine("prefill", "h20", speed, kv_byte_scale=KV_BYTE_SCALE)
                       for _ in range(int(ours["n_prefill"]))]  # fmt: skip
            decode = [stack.engine("decode", "h20", speed, kv_byte_scale=KV_BYTE_SCALE)
                      for _ in range(n_dec)]  # fmt: skip
            routers = {}
            naive_dec = decode[: int(naive["n_decode"])]
            if "prfaas-router" in wanted:
                routers["prfaas-router"] = stack.prfaas_router(
                    local_p, decode[: int(ours["n_decode"])],
                    pools=[("pool", pool, link_gbps)],
                    threshold_tokens=int(ours["threshold_tokens"]),
                )  # fmt: skip
            if "sglang-router" in wanted:
                routers["sglang-router"] = stack.sglang_router(tools.sglang_router, pool, naive_dec)
            if "vllm-router" in wanted:
                routers["vllm-router"] = stack.vllm_router(tools.vllm_router, pool, naive_dec)
        except StartError as e:
            console.print(f"[red]start-up failed: {e}[/]")
            return 1
        engines = pool + local_p + decode
        for name, router in routers.items():
            reqs, lengths = load(args.rate, args.requests, speed, out_tokens, args.seed, name)
            before = {e.url: scrape(e.url + "/metrics") for e in engines}
            link_before = scrape(link.metrics_url or "")
            console.print(
                f"[bold]{name}[/]: {len(reqs)} requests over "
                f"{reqs[-1][0]:.1f} s wall ({reqs[-1][0] * speed:.0f} s case study)"
            )
            s = asyncio.run(open_loop(Via(name, router.url), reqs, timeout_s=600))
            deadline = time.monotonic() + 60
            while not drained(engines) and time.monotonic() < deadline:
                time.sleep(0.2)
            after = {e.url: scrape(e.url + "/metrics") for e in engines}
            link_after = scrape(link.metrics_url or "")
            ttft = [(lat - (out_tokens - 1) * step / speed) * speed for lat in s.latency]

            def d(es: list[Engine], key: str) -> float:
                return sum(after[e.url].get(key, 0) - before[e.url].get(key, 0) for e in es)  # noqa: B023

            on_pool = d(pool, PREFILL)
            local = d(local_p, PREFILL) + d(decode, BOTH)
            span = float(reqs[-1][0]) * speed
            wire = link_after.get("prfaas_link_bytes_total", 0) - link_before.get(
                "prfaas_link_bytes_total", 0
            )
            good = sum(1 for t in ttft if t <= args.slo_s)
            results[name] = {
                "completed": s.ok,
                "errors": s.errors,
                "first_error": s.first_error,
                "ttft_s": {q: round(pct(ttft, float(q[1:])), 3) for q in ("p50", "p90", "p99")},
                "ttft_mean_s": round(float(np.mean(ttft)), 3) if ttft else None,
                "goodput_rps": round(good / span, 3),
                "slo_attainment": round(good / len(reqs), 4),
                "prefills_on_pool": int(on_pool),
                "prefills_local": int(local),
                "offload_fraction": round(on_pool / max(1.0, on_pool + local), 3),
                "egress_gbps_mean": round(wire / KV_BYTE_SCALE * 8 / 1e9 / span, 2),
                "mean_prompt_tokens": round(float(np.mean(lengths)), 1),
                "client_lag_p99_ms": round(pct(s.lag, 99) * 1e3, 2),
            }
    report = {
        "benchmark": "goodput",
        "when": stamp,
        "cores": os.cpu_count(),
        "args": vars(args),
        "plan": {"prfaas": ours, "naive": naive},
        "ttft": "derived: latency − (L_out − 1) × step / speedup, in case-study seconds",
        "results": results,
    }
    path = OUT / f"goodput-{stamp}.json"
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=float))
    t = Table(title=f"Case study ×{speed:g}: {args.requests} Poisson requests at {args.rate:g} "
                    "req/s, "
                    f"TTFT SLO {args.slo_s:g} s (case-study seconds)")  # fmt: skip
    for col in ("router", "setup", "done/err", "TTFT P50", "P90", "P99", "goodput req/s",
                "SLO met", "on pool", "egress Gbps"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("router", "setup") else "right")
    for name, r in results.items():
        setup = "PrfaaS-PD (t, pool + PD-P)" if name == "prfaas-router" else "naive: all on pool"
        t.add_row(
            name, setup, f"{r['completed']}/{r['errors']}",
            *(f"{r['ttft_s'][q]:.2f}" for q in ("p50", "p90", "p99")),
            f"{r['goodput_rps']:.2f}", f"{r['slo_attainment']:.0%}",
            f"{r['offload_fraction']:.0%}", f"{r['egress_gbps_mean']:.1f}",
        )  # fmt: skip
    console.print(t)
    console.print(f"JSON: {path.relative_to(REPO)}  (process logs in {logs.relative_to(REPO)})")
    return 1 if any(r["errors"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
