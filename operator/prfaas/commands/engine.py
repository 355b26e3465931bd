"""``prfaas engine``: a simulated inference engine (OpenAI API, vLLM/SGLang P/D hand-offs)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prfaas.commands.errors import CommandError
from prfaas.commands.serving_args import add_scaling, host_port, port, positive, serve

WILDCARDS = ("0.0.0.0", "::", "")  # bind addresses that name no host


def register(sub: Any) -> None:
    p = sub.add_parser(
        "engine",
        help="run a simulated inference engine (prefill, decode or both)",
        description=(
            "An OpenAI-compatible engine stand-in with the timing of a profiled instance "
            "(prefill latency by uncached length, decode step, batch slots) and a prefix cache. "
            "It speaks the P/D hand-offs of vllm-router (kv_transfer_params) and sglang-router "
            "(bootstrap_room; give the router this engine's --kv-port as bootstrap port), and "
            "ships the KVCache to decode over TCP. Answers are ' tok0 tok1 ...'."
        ),
    )
    p.add_argument("--role", choices=("prefill", "decode", "both"), default="both")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    p.add_argument("--port", type=port, default=8001, help="HTTP port (default %(default)s)")
    p.add_argument("--kv-port", type=port, help="KV transfer TCP port (default: --port + 1000)")
    p.add_argument(
        "--kv-advertise",
        type=host_port,
        metavar="HOST:PORT",
        help="address decode engines pull the KVCache from (a `prfaas link` relay to this "
        "engine's KV port, for a cross-datacenter hop); default: this engine's KV port",
    )
    p.add_argument(
        "--kv-via",
        type=host_port,
        metavar="HOST:PORT",
        help="a `prfaas link` gateway (its --gateway-port) that decode engines pull through: "
        "advertised instead of --kv-advertise, and every transfer key names this engine's KV "
        "address (--kv-advertise, else --host:--kv-port) for the gateway to dial. One shared "
        "link for engines that come and go (pods); vLLM-style hand-offs (kv_transfer_params)",
    )
    p.add_argument(
        "--profile",
        default="h20",
        help="accelerator of the scenario's instance whose timing to use (case study: h200 "
        "for the PrefillPool, h20 for the PD cluster); default %(default)s",
    )
    p.add_argument("-f", "--scenario", help="scenario YAML (default: the paper's case study)")
    add_scaling(p)
    p.add_argument(
        "--zero-compute",
        action="store_true",
        help="no compute time and empty KV transfers (router-overhead benchmarks)",
    )
    p.add_argument("--model", default="sim-model", help="served model name (default %(default)s)")
    p.add_argument(
        "--get-load-format",
        choices=("sglang", "vllm"),
        default="sglang",
        help="/get_load answer shape (the two routers' power_of_two policies differ)",
    )
    p.add_argument("--tokenizer", help="Hugging Face tokenizer.json for text prompts")
    p.add_argument(
        "--emit-interval",
        type=positive,
        default=0.02,
        help="streamed tokens that are due go out together at most this often, seconds "
        "(the first token is never delayed); default %(default)s",
    )
    p.add_argument("--max-body-mb", type=int, default=64, help="request size limit, MiB")
    p.add_argument(
        "--kv-peer",
        action="append",
        default=[],
        metavar="NET",
        help="a network (CIDR or IP) or host name decode may pull a KVCache from (repeatable; "
        "default: loopback only). Requests naming any other source get 403 "
        "kv_peer_not_allowed: the address comes from the request",
    )
    p.add_argument(
        "--kv-timeout",
        type=positive,
        default=30.0,
        help="seconds a KV transfer (and a FETCH for a key not there yet) may take "
        "(default %(default)s)",
    )
    p.add_argument("--admin", action="store_true", help="serve POST /flush_cache (off: 404)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prometheus_client import disable_created_metrics

    # no *_created series: dashboards and peers never read them
    disable_created_metrics()  # type: ignore[no-untyped-call]
    from prfaas.engine.peers import LOOPBACK
    from prfaas.engine.server import EngineConfig
    from prfaas.engine.server import run as run_engine
    from prfaas.engine.timing import ProfileError, timing_for
    from prfaas.model.scenario import ScenarioError, case_study, load_scenario
    from prfaas.serving.tokenizer import TokenizerError

    kv_port = args.kv_port or args.port + 1000
    if kv_port > 65535 or kv_port == args.port:
        raise CommandError(f"KV port {kv_port} is not usable: pass --kv-port")
    if args.host in WILDCARDS and args.kv_advertise is None and args.role != "decode":
        raise CommandError(
            f"--host {args.host} listens everywhere but is no address decode engines can pull "
            "the KVCache from: pass --kv-advertise HOST:PORT (e.g. the pod's IP and --kv-port)"
        )
    try:
        scenario = load_scenario(args.scenario) if args.scenario else case_study()
        timing = timing_for(
            scenario, args.profile, args.speedup, args.kv_byte_scale, args.zero_compute
        )
        cfg = EngineConfig(
            role=args.role,
            model=args.model,
            timing=timing,
            host=args.host,
            kv_port=kv_port,
            kv_advertise=args.kv_advertise,
            kv_via=args.kv_via,
            get_load_format=args.get_load_format,
            max_body_bytes=args.max_body_mb << 20,
            tokenizer=args.tokenizer,
            emit_interval_s=args.emit_interval,
            kv_peers=tuple(args.kv_peer) or LOOPBACK,
            kv_timeout_s=args.kv_timeout,
            admin=args.admin,
        )
        from prfaas.engine.server import Engine

        Engine(cfg)  # validates the tokenizer before binding ports
    except (ScenarioError, ProfileError, TokenizerError) as exc:
        raise CommandError(str(exc)) from None

    def ready() -> None:
        print(
            f"prfaas engine: {args.role} ({args.profile}, speedup {args.speedup:g}) on "
            f"http://{args.host}:{args.port}, KV on {args.host}:{kv_port}",
            file=sys.stderr,
            flush=True,
        )

    return serve(run_engine(cfg, args.port, ready))
