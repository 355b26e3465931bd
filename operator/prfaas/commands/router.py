"""``prfaas router``: the fast loop over HTTP (sidecar next to a gateway, or standalone)."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import Any

from prfaas.commands.errors import CommandError
from prfaas.commands.serving_args import (
    add_logging,
    non_negative,
    port,
    positive,
    positive_int,
    serve,
    workers,
)

_NAME = r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"
_PDCLUSTER = re.compile(f"{_NAME}/{_NAME}")


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
        "--metrics-pdcluster",
        metavar="NAMESPACE/NAME",
        help="label every /metrics series pdcluster=NAMESPACE/NAME, so that the operator's "
        "default queries count this router's traffic for that PDCluster only (default: the "
        "--pdcluster it watches; with --policy-file: unlabelled, counted for every PDCluster "
        "planning from that Prometheus)",
    )
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
        "--link-retry",
        type=positive,
        default=1.0,
        help="seconds between probes of a link whose KV transfers failed (a 1-token prefill on "
        "the pool pulled by a decode engine; clients never probe); default %(default)s",
    )
    bounds = p.add_argument_group(
        "phase bounds",
        "How long a request may wait for each phase before it fails over: prefill, "
        "floor + factor x the profile's prefill time for its uncached length (and the tokens "
        "queued ahead of it); KV arrival and first token together, floor + factor x (link "
        "backlog + decode step x tokens before the first byte), extended while the decode "
        "engine answers its scrapes and has a queue. A pool that overruns fails open to local "
        "prefill and is avoided until it answers a scrape.",
    )
    bounds.add_argument(
        "-f",
        "--scenario",
        help="scenario YAML with the instance profiles (default: the case study)",
    )
    bounds.add_argument(
        "--speedup",
        type=positive,
        default=1.0,
        help="the engines run the profiles this many times faster (simulated engines' "
        "--speedup); default 1",
    )
    bounds.add_argument(
        "--deadline-factor",
        type=non_negative,
        default=3.0,
        help="multiple of the expected time (0: no phase bounds); default %(default)s",
    )
    bounds.add_argument(
        "--deadline-floor",
        type=positive,
        default=1.0,
        help="seconds added to every bound (HTTP, scheduling); default %(default)s",
    )
    p.add_argument(
        "--resolve-localhost",
        action="store_true",
        help="send to 127.0.0.1 for engines named <name>.localhost (RFC 6761): EndpointSlices "
        "may not hold loopback addresses, so this is how they name engines on this host "
        "(development, tests). Off: such names go to the system resolver",
    )
    trust = p.add_argument_group(
        "trust boundaries",
        "What clients may ask of the router, and where it may send their prompts. Each limit "
        "is answered with an OpenAI-style error, counted in prfaas_router_errors_total{code}.",
    )
    trust.add_argument(
        "--allow-endpoint",
        action="append",
        default=[],
        metavar="ENTRY",
        help="where the policy's declared engines may be (repeatable): a CIDR (10.8.0.0/16, "
        "for hosts written as IPs), HOST[:PORT] (*.svc.cluster.local matches names under it; "
        "no DNS lookup) or an http(s) URL prefix. A declared endpoint matching none is dropped, "
        "logged and counted (prfaas_router_endpoints_refused), never contacted; engines found "
        "from EndpointSlices are allowed. Default: none given, any http(s) endpoint",
    )
    trust.add_argument(
        "--api-key-file",
        type=Path,
        metavar="PATH",
        help="require 'Authorization: Bearer <key>' on /v1/* (401 otherwise), keys one per "
        "line, re-read when the file changes (a mounted Secret). Default: no authentication",
    )
    trust.add_argument(
        "--admin-port",
        type=port,
        help="serve /policy and a /v1/route that names the engines' URLs on this port (the "
        "client port never shows an engine URL). Default: off",
    )
    trust.add_argument(
        "--admin-host", default="127.0.0.1", help="admin bind address (default %(default)s)"
    )
    trust.add_argument(
        "--max-tokens-limit",
        type=positive_int,
        default=32_768,
        help="largest max_tokens a request may ask (400 above); default %(default)s",
    )
    trust.add_argument(
        "--max-prompt-tokens",
        type=positive_int,
        default=262_144,
        help="largest prompt in tokens (400 above); default %(default)s",
    )
    trust.add_argument(
        "--max-concurrency",
        type=positive_int,
        default=1024,
        help="client requests in flight here at most (429 with Retry-After above); "
        "default %(default)s",
    )
    trust.add_argument(
        "--max-json-depth",
        type=positive_int,
        default=64,
        help="deepest nesting of a request body (400 above); default %(default)s",
    )
    trust.add_argument(
        "--idle-timeout",
        type=positive,
        default=15.0,
        help="seconds a connection may take to send a whole request head after connecting or "
        "after its last answer (idle keep-alive and slow heads are closed); default %(default)s",
    )
    trust.add_argument(
        "--body-timeout",
        type=positive,
        default=60.0,
        help="seconds to receive a request body once its head is in (408 after); "
        "default %(default)s",
    )
    p.add_argument(
        "--workers",
        type=workers,
        default=1,
        help="router processes sharing the port (SO_REUSEPORT), to use several cores; each "
        "routes on its own, the link's load read from the pool side holds across them; "
        "default %(default)s",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one of --workers
    p.add_argument(
        "--static",
        action="store_true",
        help="the paper's static rule only (fixed t, no bandwidth-aware adaptation)",
    )
    add_logging(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.workers > 1 and not args.worker:
        from prfaas.commands import logs
        from prfaas.commands.workers import supervise

        logs.configure(args.log_format, args.verbose)
        return supervise(args.workers, sys.argv[1:])
    from prometheus_client import disable_created_metrics

    from prfaas.commands import logs
    from prfaas.discovery.watch import api_client
    from prfaas.model.scenario import ScenarioError, case_study, load_scenario
    from prfaas.router import policy_source
    from prfaas.router.allow import AllowError, Allowlist
    from prfaas.router.auth import ApiKeys, KeyFileError
    from prfaas.router.deadline import PhaseBudget
    from prfaas.router.discovery import Discovery
    from prfaas.router.fleet import Fleet
    from prfaas.router.limits import Limits
    from prfaas.router.server import RouterConfig, RouterServer
    from prfaas.router.server import run as run_router
    from prfaas.routing.config import RoutingConfig
    from prfaas.routing.policy import PolicyError, RoutingPolicy
    from prfaas.serving.tokenizer import TokenizerError

    disable_created_metrics()  # type: ignore[no-untyped-call]
    logs.configure(args.log_format, args.verbose)
    try:
        scenario = load_scenario(args.scenario) if args.scenario else case_study()
    except ScenarioError as exc:
        raise CommandError(str(exc)) from None
    try:
        allow = Allowlist(args.allow_endpoint)
        keys = ApiKeys(args.api_key_file) if args.api_key_file is not None else None
    except (AllowError, KeyFileError) as exc:
        raise CommandError(str(exc)) from None
    limits = Limits(
        max_tokens=args.max_tokens_limit,
        max_prompt_tokens=args.max_prompt_tokens,
        max_concurrency=args.max_concurrency,
        max_json_depth=args.max_json_depth,
        idle_timeout_s=args.idle_timeout,
        body_timeout_s=args.body_timeout,
    )
    label = args.metrics_pdcluster or (
        f"{args.namespace}/{args.pdcluster}" if args.pdcluster else None
    )
    if label is not None and not _PDCLUSTER.fullmatch(label):
        raise CommandError(f"--metrics-pdcluster {label!r}: expected NAMESPACE/NAME")
    cfg = RouterConfig(
        pdcluster=label,
        models=tuple(args.model),
        max_body_bytes=int(args.max_body_mb * (1 << 20)),
        tokenizer=args.tokenizer,
        scrape_interval_s=args.scrape_interval,
        link_retry_s=args.link_retry,
        budget=PhaseBudget.from_scenario(
            scenario, args.speedup, args.deadline_factor, args.deadline_floor
        )
        if args.deadline_factor > 0
        else None,
        limits=limits,
        api_keys=keys,
    )
    routing = RoutingConfig.static() if args.static else None  # None: the fleet's default
    try:
        fleet = Fleet(routing, args.link_retry, args.resolve_localhost, allow)
        server = RouterServer(cfg, fleet)
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
            admin = None if args.admin_port is None else (args.admin_host, args.admin_port)
            await run_router(server, args.host, args.port, admin, reuse_port=args.worker)
        finally:
            watcher.cancel()
            discovery.stop()

    return serve(main())
