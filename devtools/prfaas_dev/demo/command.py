"""``prfaas demo``: the whole system live on this machine, on the paper's case study.

Added to the ``prfaas`` command line through the entry-point group ``prfaas.commands``
(devtools/pyproject.toml); only :func:`register` runs when ``prfaas`` starts, so it stays cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from prfaas.commands.errors import CommandError
from prfaas.commands.serving_args import positive


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run operator, router, engines and traffic live on the case study",
        description=(
            "1) A homogeneous PD baseline (H20 engines only, the planner's best split) under "
            "case-study traffic. 2) PrfaaS: two local API servers for two datacenters, the "
            "CRDs and case-study resources, the operator reading Prometheus, the router, "
            "simulated H200/H20 engines that follow the operator's /scale, a shaped 100 Gbps "
            "link, the same traffic, and a mid-run event both loops react to. Time runs "
            "--speedup times faster than the case study; all figures are in its units. "
            "Needs the local Kubernetes binaries (make k8s-bin) and Prometheus (make deps)."
        ),
    )
    p.add_argument("--speedup", type=positive, default=10.0, help="time scale (default 10)")
    p.add_argument(
        "--rate",
        type=positive,
        default=2.4,
        help="offered load in case-study req/s (default 2.4: above the homogeneous setup's "
        "capacity of ~2.1, below PrfaaS-PD's ~3.2)",
    )
    p.add_argument(
        "--baseline-seconds", type=positive, default=40.0, help="wall seconds of phase 1"
    )
    p.add_argument(
        "--prfaas-seconds",
        type=positive,
        default=60.0,
        help="wall seconds of phase 2 before the event",
    )
    p.add_argument(
        "--after-seconds", type=positive, default=40.0, help="wall seconds after the event"
    )
    p.add_argument(
        "--event",
        choices=("shift", "link-drop", "none"),
        default="shift",
        help="mid-run event: prompts get longer, or the link drops to 10 Gbps",
    )
    p.add_argument("--no-baseline", action="store_true", help="skip the homogeneous phase")
    p.add_argument(
        "--kubeconfig",
        type=Path,
        help="use this cluster (both datacenters) instead of two local API servers; "
        "creates namespace prfaas-demo and CRDs there. Without it, a reachable $KUBECONFIG "
        "is offered on a terminal",
    )
    p.add_argument(
        "--kind",
        action="store_true",
        help="run the PrfaaS phase on the two kind clusters (make kind; brought up if absent): "
        "operator and router from the Helm chart, engines as pods on GPU node groups, the "
        "project image built from the Dockerfile. No baseline phase; everything stays up "
        "for kubectl afterwards (make kind-down removes it)",
    )
    p.add_argument("--out", type=Path, default=Path(".local/demo"), help="logs and summary")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask anything")
    p.set_defaults(func=run)


def _offer_existing(args: argparse.Namespace) -> Path | None:
    if args.kubeconfig is not None:
        if not args.kubeconfig.is_file():
            raise CommandError(f"{args.kubeconfig}: no such kubeconfig")
        return Path(args.kubeconfig)
    env = os.environ.get("KUBECONFIG")
    if not env or args.yes or not sys.stdin.isatty():
        return None
    path = Path(env.split(os.pathsep)[0])
    if not path.is_file():
        return None
    from prfaas_dev.kubectl import kubectl

    try:
        reachable = kubectl(path, "version", "--request-timeout=3s", check=False).returncode == 0
    except Exception:  # any failure means: not reachable, use the local API servers
        reachable = False
    if not reachable:
        return None
    answer = input(f"$KUBECONFIG ({path}) reaches a cluster. Run the demo there? [y/N] ")
    return path if answer.strip().lower() in ("y", "yes") else None


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from prfaas_dev.demo.kube import quiet_env
    from prfaas_dev.demo.run import Demo, DemoError, Options, results_json, summary
    from prfaas_dev.kubectl import KubeError
    from prfaas_dev.ports import NoFreePortError
    from prfaas_dev.procs import ProcessError

    if args.kind and args.kubeconfig is not None:
        raise CommandError("--kind and --kubeconfig exclude each other")
    existing = None if args.kind else _offer_existing(args)
    opts = Options(
        speedup=args.speedup,
        rate=args.rate,
        baseline_s=args.baseline_seconds,
        prfaas_s=args.prfaas_seconds,
        after_s=args.after_seconds,
        event=args.event,
        baseline=not (args.no_baseline or args.kind),
        kubeconfig=existing,
        out=args.out,
    )
    console = Console()
    total = (opts.baseline_s if opts.baseline else 0) + opts.prfaas_s + opts.after_s
    console.print(
        f"[bold]PrfaaS demo[/bold]: the case study at {opts.speedup:g}x speed, "
        f"{opts.rate:g} req/s offered; about {total / 60 + 0.7:.0f} min. Logs in {opts.out}/logs"
    )
    demo: Demo
    if args.kind:
        from prfaas_dev.demo.on_kind import KindDemo

        demo = KindDemo(opts, console)
    else:
        demo = Demo(opts, console)
    try:
        with quiet_env():
            results = demo.run()
    except (DemoError, KubeError, ProcessError, NoFreePortError) as exc:
        raise CommandError(str(exc)) from None
    except KeyboardInterrupt:
        console.print("interrupted: everything the demo started has been stopped")
        return 130
    summary(console, results, demo.timeline)
    out = opts.out / "summary.json"
    out.write_text(json.dumps(results_json(results, opts), indent=2))
    after = demo.epilogue()
    console.print(f"summary written to {out}" + ("" if after else "; nothing is left running"))
    for line in after:
        console.print(line)
    base = next((r for r in results if r.name.startswith("homogeneous")), None)
    ours = next((r for r in results if r.name.startswith("PrfaaS")), None)
    if base and ours and base.window.throughput > 0:
        console.print(
            f"[bold]PrfaaS-PD served {ours.window.throughput / base.window.throughput:.2f}x "
            f"the homogeneous baseline's throughput[/bold] at P90 TTFT "
            f"{ours.window.ttft_p90:.1f} s vs {base.window.ttft_p90:.1f} s"
        )
    return 0
