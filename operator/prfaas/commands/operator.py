"""``prfaas operator``: run the slow loop (kopf) against the current kubeconfig or in-cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

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
            "(strategy Recreate), or several with --peering NAME (kopf peering, its CRDs and "
            "object shipped by the chart): one acts, the others take over when it dies."
        ),
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch only these (repeatable)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all (default)")
    p.add_argument(
        "--peering",
        metavar="NAME",
        help="kopf peering object (ClusterKopfPeering, or KopfPeering per --namespace) shared "
        "by the replicas: the one of highest --priority acts, the others wait (default: "
        "standalone, one replica)",
    )
    p.add_argument(
        "--priority",
        type=int,
        metavar="N",
        help="peering priority (default: random, so that two replicas never tie: a tie pauses "
        "both)",
    )
    p.add_argument(
        "--peering-lifetime",
        type=int,
        default=15,
        metavar="S",
        help="seconds a replica's peering record lives without a keep-alive: how long the "
        "others wait after it dies (default %(default)s)",
    )
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
        "--workers",
        type=int,
        default=16,
        metavar="N",
        help="passes that run at once, each in a thread (its API calls wait on the network; "
        "planning holds one core); also the connections to the local API server "
        "(default %(default)s)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="plan and report in status, but never patch /scale or member clusters",
    )
    trust = p.add_argument_group(
        "what CR authors may make the operator do (default: nothing beyond their namespace)"
    )
    trust.add_argument(
        "--allow-prometheus",
        action="append",
        default=[],
        metavar="URL",
        help="a Prometheus base URL that workload.prometheus.url may name (repeatable; a URL "
        "matches with the same scheme, host and port and a path under this one). Without it "
        "PDClusters can only declare their workload",
    )
    trust.add_argument(
        "--allow-target-namespace",
        action="append",
        default=[],
        metavar="NS",
        help="a namespace that any CR may name in scaleTargetRef.namespace (repeatable); "
        "otherwise a CR scales only in its own namespace",
    )
    trust.add_argument(
        "--allow-kubeconfig-exec",
        action="store_true",
        help="let member kubeconfig Secrets use exec credential plugins (runs the command they "
        "name, as the operator); auth-provider and file references stay refused",
    )
    trust.add_argument(
        "--max-plan-cells",
        type=int,
        default=2_000_000,
        metavar="N",
        help="most planning-grid cells (pool sizes × splits × thresholds) one PDCluster may "
        "cost per pass; larger ones get Ready=False/PlanTooLarge (default %(default)s: "
        "~0.6 s and ~150 MB)",
    )
    add_logging(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    from prfaas.controller import handlers
    from prfaas.controller.trust import Trust

    if args.peering_lifetime < 2:
        raise CommandError("--peering-lifetime must be at least 2 seconds")
    if args.max_plan_cells < 1:
        raise CommandError("--max-plan-cells must be at least 1")
    if not 1 <= args.workers <= 256:
        raise CommandError("--workers must be between 1 and 256")
    if not 0 <= args.metrics_port <= 65535:
        raise CommandError(f"--metrics-port {args.metrics_port} is not a port")
    handlers.Runtime.dry_run = args.dry_run
    handlers.Runtime.peering_lifetime = args.peering_lifetime
    handlers.Runtime.workers = args.workers
    handlers.Runtime.trust = Trust(
        allow_kubeconfig_exec=args.allow_kubeconfig_exec,
        target_namespaces=frozenset(args.allow_target_namespace),
        prometheus_urls=tuple(_prometheus_urls(args.allow_prometheus)),
        max_plan_cells=args.max_plan_cells,
    )
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
            priority=args.priority if args.priority is not None else secrets.randbelow(1 << 30),
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=None if args.liveness == "none" else args.liveness,
        )
    )
    return 0


def _prometheus_urls(urls: list[str]) -> list[str]:
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise CommandError(f"--allow-prometheus {url!r}: expected http(s)://host[:port][/path]")
    return urls
