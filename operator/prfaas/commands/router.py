"""``prfaas router``: the fast loop over HTTP (sidecar next to a gateway, or standalone)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from prfaas.commands.errors import CommandError
from prfaas.commands.serving_args import add_logging, port, positive, serve


def register(sub: Any) -> None:
    p = sub.add_parser(
        "router",
        help="run the PrfaaS router (fast loop: per-request prefill placement)",
        description=(
            "OpenAI-compatible front for one PD cluster. Each request's uncached length "
            "(prefix cache included) is compared with the threshold of the routing policy: "
            "long ones are prefilled on a PrefillPool and their KVCache shipped to a local "
            "decode instance, short ones stay local; link and pool failures fall back to local "
            "prefill. POST /v1/route answers the decision only. The policy comes from the "
            "PDCluster's status (--pdcluster; needs get/list/watch on pdclusters) or a file "
            "(--policy-file; JSON/YAML of status.routingPolicy, re-read when it changes). "
            "Engines are the policy's URLs; a local group declared by Service or selector "
            "(prefillDiscovery/decodeDiscovery) is found from its EndpointSlices in this "
            "cluster (needs list/watch on endpointslices there): ready endpoints get new "
            "requests, terminating ones finish what they have."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pdcluster", metavar="NAME", help="watch this PDCluster's status")
    src.add_argument("--policy-file", type=Path, metavar="PATH", help="read the policy here")
    p.add_argument("-n", "--namespace", default="default", help="the PDCluster's namespace")
    p.add_argument(
        "--kubeconfig",
        help="kubeconfig for the PDCluster and EndpointSlice watches (default: in-cluster, "
        "then $KUBECONFIG or ~/.kube/config)",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    p.add_argument("--port", type=port, default=8000, help="HTTP port (default %(default)s)")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        help="served model name (repeatable); requests for others get 404. Default: any",
    )
    p.add_argument(
        "--tokenizer",
        help="Hugging Face tokenizer.json for exact text token counts (default: ~4 bytes per "
        "token, counted in prfaas_router_approximate_token_counts_total)",
    )
    p.add_argument("--max-body-mb", type=positive, default=16, help="larger bodies get 413")
    p.add_argument(
        "--scrape-interval", type=positive, default=1.0, help="engine /metrics scrape, seconds"
    )
    p.add_argument(
        "--link-retry", type=positive, default=5.0, help="seconds a failed link is avoided"
    )
    p.add_argument(
        "--resolve-localhost",
        action="store_true",
        help="send to 127.0.0.1 for engines named <name>.localhost (RFC 6761): EndpointSlices "
        "may not hold loopback addresses, so this is how they name engines on this host "
        "(development, tests). Off: such names go to the system resolver",
    )
    p.add_argument(
        "--static",
        action="store_true",
        help="the paper's static rule only (fixed t, no bandwidth-aware adaptation)",
    )
    add_logging(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prometheus_client import disable_created_metrics

    from prfaas.commands import logs
    from prfaas.discovery.watch import api_client
    from prfaas.router import policy_source
    from prfaas.router.discovery import Discovery
    from prfaas.router.fleet import Fleet
    from prfaas.router.server import RouterConfig, RouterServer
    from prfaas.router.server import run as run_router
    from prfaas.routing.config import RoutingConfig
    from prfaas.routing.policy import PolicyError, RoutingPolicy
    from prfaas.serving.tokenizer import TokenizerError

    disable_created_metrics()  # type: ignore[no-untyped-call]
    logs.configure(args.log_format, args.verbose)
    cfg = RouterConfig(
        models=tuple(args.model),
        max_body_bytes=int(args.max_body_mb * (1 << 20)),
        tokenizer=args.tokenizer,
        scrape_interval_s=args.scrape_interval,
        link_retry_s=args.link_retry,
    )
    routing = RoutingConfig.static() if args.static else None  # None: the fleet's default
    try:
        server = RouterServer(cfg, Fleet(routing, args.link_retry, args.resolve_localhost))
    except TokenizerError as exc:
        raise CommandError(str(exc)) from None
    if args.policy_file is not None:
        try:  # fail fast on a file that is unreadable now; later bad edits are logged and held
            server.set_policy(policy_source.read_policy_file(args.policy_file))
        except PolicyError as exc:
            raise CommandError(str(exc)) from None

    async def main() -> None:
        discovery = Discovery(
            server.fleet, asyncio.get_running_loop(), lambda: api_client(args.kubeconfig)
        )

        def apply(policy: RoutingPolicy) -> None:
            server.set_policy(policy)
            discovery.follow(policy)  # the local groups' EndpointSlices it names

        if server.fleet.published is not None:
            discovery.follow(server.fleet.published)
        if args.policy_file is not None:
            source = policy_source.watch_file(args.policy_file, apply)
        else:
            kube = policy_source.KubeSource(args.pdcluster, args.namespace, args.kubeconfig)
            source = kube.run(apply)
        watcher = asyncio.ensure_future(source)
        try:
            await run_router(server, args.host, args.port)
        finally:
            watcher.cancel()
            discovery.stop()

    return serve(main())
