"""``prfaas link``: the shaped inter-datacenter link between PrefillPool and PD cluster."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from prfaas.commands.errors import CommandError
from prfaas.commands.serving_args import add_scaling, host_port, port, positive, serve


def _route(value: str) -> tuple[int, tuple[str, int]]:
    listen, sep, target = value.partition("=")
    if not sep or not listen.isdigit():
        raise argparse.ArgumentTypeError(f"expected LISTEN_PORT=HOST:PORT, got {value!r}")
    return port(listen), host_port(target)


def _network(value: str) -> Any:
    import ipaddress

    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a network like 10.245.0.0/16, got {value!r}"
        ) from None


def register(sub: Any) -> None:
    p = sub.add_parser(
        "link",
        help="run a shaped link (capacity, RTT) that KV transfers cross",
        description=(
            "A TCP relay standing for the link between datacenters: every KV byte relayed "
            "shares one bottleneck of --gbps (scaled by --speedup and --kv-byte-scale, like the "
            "engines) and waits half the RTT. Point each PrefillPool engine's --kv-advertise at "
            "its --route port, or run a --gateway-port and start the engines with --kv-via "
            "(engines that come and go, e.g. pods: the transfer key names the engine, which "
            "must lie in an --allow network). "
            "Admin API: GET/POST /link ({'gbps': 10} or {'up': false})."
        ),
    )
    p.add_argument(
        "--route",
        type=_route,
        action="append",
        default=[],
        metavar="PORT=HOST:PORT",
        help="relay this listen port to an engine's KV port (repeatable)",
    )
    p.add_argument(
        "--gateway-port",
        type=port,
        help="also listen here for engines started with --kv-via: each transfer names its "
        "engine, which is dialled if its IP lies in an --allow network",
    )
    p.add_argument(
        "--allow",
        type=_network,
        action="append",
        default=[],
        metavar="CIDR",
        help="a network the gateway may dial (repeatable; e.g. the PrefillPool's pod network)",
    )
    p.add_argument("--gbps", type=positive, default=100.0, help="capacity (default %(default)s)")
    p.add_argument("--rtt-ms", type=float, default=0.0, help="round-trip time, unscaled")
    p.add_argument("--admin-port", type=port, default=9900, help="admin API (default %(default)s)")
    p.add_argument(
        "--admin-host",
        default="127.0.0.1",
        help="admin API bind address (default %(default)s: it can cut the link, so only this "
        "host reaches it unless you say otherwise)",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    p.add_argument("--name", default="link", help="name in /link and logs")
    add_scaling(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prometheus_client import disable_created_metrics

    # no *_created series: dashboards and peers never read them
    disable_created_metrics()  # type: ignore[no-untyped-call]
    from aiohttp import web

    from prfaas.engine.link import Link, Shaper, bytes_per_gbit

    if args.rtt_ms < 0:
        raise CommandError("--rtt-ms must be >= 0")
    routes = dict(args.route)
    if len(routes) != len(args.route):
        raise CommandError("two --route options listen on the same port")
    if not routes and args.gateway_port is None:
        raise CommandError("nothing to relay: give --route PORT=HOST:PORT or --gateway-port")
    if args.gateway_port is not None and not args.allow:
        raise CommandError("--gateway-port needs --allow CIDR: the networks it may dial")
    if args.gateway_port in routes or args.gateway_port == args.admin_port:
        raise CommandError(f"port {args.gateway_port} is used twice")
    shaper = Shaper(
        args.gbps,
        args.rtt_ms / 2000 / args.speedup,
        bytes_per_gbit(args.kv_byte_scale, args.speedup),
    )
    link = Link(
        args.name,
        routes,
        shaper,
        speedup=args.speedup,
        rtt_ms=args.rtt_ms,
        gateway_port=args.gateway_port,
        allow=args.allow,
    )

    async def main() -> None:
        await link.start(args.host)
        runner = web.AppRunner(link.admin_app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.admin_host, args.admin_port).start()
        print(
            f"prfaas link: {args.name} {args.gbps:g} Gbps, RTT {args.rtt_ms:g} ms, "
            f"{len(routes)} route(s)"
            + (f", gateway on {args.gateway_port}" if args.gateway_port else "")
            + f", admin on http://{args.admin_host}:{args.admin_port}",
            file=sys.stderr,
            flush=True,
        )
        try:
            await asyncio.Event().wait()
        finally:
            await link.stop()
            await runner.cleanup()

    return serve(main())
