"""``prfaas operator``: run the slow loop (kopf) against the current kubeconfig or in-cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from prfaas.commands.errors import CommandError
from prfaas.commands.serving_args import add_logging


def register(sub: Any) -> None:
    p = sub.add_parser(
        "operator",
        help="run the PrfaaS operator (slow loop: plan, scale, publish routing policy)",
        description=(
            "Watch PDCluster and PrefillPool resources (prfaas.io/v1alpha1). Every "
            "policy.intervalSeconds, and at once when a spec changes, each PDCluster is "
            "re-planned from Prometheus or its declared workload; in Enforce mode the /scale "
            "of its targets is patched within bounds, max step and cooldown. Run ONE replica "
            "(strategy Recreate): --standalone is the default; --peering NAME uses kopf peering "
            "(needs its CRDs) so that a second replica waits instead of acting."
        ),
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch only these (repeatable)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all (default)")
    p.add_argument("--peering", metavar="NAME", help="kopf peering object (default: standalone)")
    p.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        metavar="URL",
        help="liveness endpoint (default %(default)s; 'none' to disable)",
    )
    p.add_argument(
        "--metrics-port", type=int, default=9090, help="Prometheus /metrics port (0: off)"
    )
    p.add_argument("--metrics-address", default="0.0.0.0", help="bind address for /metrics")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="plan and report in status, but never patch /scale or member clusters",
    )
    add_logging(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    from prfaas.controller import handlers

    if not 0 <= args.metrics_port <= 65535:
        raise CommandError(f"--metrics-port {args.metrics_port} is not a port")
    handlers.Runtime.dry_run = args.dry_run
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
        log_refkey="object" if args.log_format == "json" else None,
    )
    if args.metrics_port:
        try:
            start_http_server(args.metrics_port, addr=args.metrics_address)
        except OSError as exc:
            raise CommandError(
                f"cannot serve /metrics on port {args.metrics_port}: {exc}"
            ) from None
    logging.getLogger("prfaas").info(
        "starting (dry-run=%s, namespaces=%s)", args.dry_run, args.namespace or "all"
    )
    asyncio.run(
        kopf.operator(
            standalone=args.peering is None,
            peering_name=args.peering,
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=None if args.liveness == "none" else args.liveness,
        )
    )
    return 0
