"""The inter-datacenter link as a process: a TCP relay with one shared bottleneck.

Each ``--route LISTEN_PORT=HOST:PORT`` forwards connections to one engine's KV port; the
``--gateway-port`` takes any engine whose address the transfer key names (``FETCH
<host>:<port>/<id>``, what ``prfaas engine --kv-via`` hands out), if that address lies in the
networks ``--allow`` declares: one link for engines that come and go (pods). Every byte coming
back (the KVCache) passes one token bucket of ``gbps`` (scaled like the engines,
see ``timing``) and a one-way delay of ``rtt/2``. Transfers share the bottleneck in arrival
order of their 64 KiB chunks, which is how a FIFO-queued WAN link splits among TCP flows.
An admin API changes capacity or cuts the link live (the demo's and the tests' link drop):
``GET /link``, ``POST /link {"gbps": 10}``, ``POST /link {"up": false}``; ``/metrics`` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from prfaas.serving.http import metrics_handler

log = logging.getLogger("prfaas.link")

CHUNK = 64 * 1024
_QUEUE_CHUNKS = 64
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class GatewayRefusedError(ValueError):
    """A gateway request the link does not forward (the reason goes back to the client)."""


def gateway_target(line: bytes, allow: Sequence[Network]) -> tuple[str, int]:
    """The engine a gateway connection's first line names: ``FETCH <ip>:<port>/<id>``.

    Only IP literals inside ``allow``: the gateway is no open proxy, it reaches the PrefillPool's
    engines and nothing else (no name lookups, so a name cannot point it elsewhere)."""
    verb, _, key = line.decode("ascii", "replace").strip().partition(" ")
    address, slash, rest = key.partition("/")
    host, colon, port = address.rpartition(":")
    if verb != "FETCH" or not slash or not rest or not colon or not port.isdigit():
        raise GatewayRefusedError("bad request: expected FETCH <ip>:<port>/<id>")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise GatewayRefusedError(f"{host!r} is not an IP address") from None
    if not 0 < int(port) < 65536:
        raise GatewayRefusedError(f"bad port {port}")
    if not any(ip in net for net in allow):
        raise GatewayRefusedError(f"{ip} is outside the networks this link serves")
    return str(ip), int(port)


@dataclass
class Shaper:
    """FIFO bottleneck: a chunk leaves when the link is free, arrives one-way later."""

    gbps: float
    one_way_s: float
    bytes_per_gbit: float  # scaled bytes per nominal Gbit (kv_byte_scale × speedup × 1e9/8)
    free_at: float = 0.0

    def rate(self) -> float:
        return self.gbps * self.bytes_per_gbit

    def schedule(self, nbytes: int, now: float) -> float:
        start = max(now, self.free_at)
        self.free_at = start + nbytes / self.rate()
        return self.free_at + self.one_way_s


@dataclass
class Link:
    name: str
    routes: dict[int, tuple[str, int]]
    shaper: Shaper
    up: bool = True
    speedup: float = 1.0
    rtt_ms: float = 0.0
    gateway_port: int | None = None
    allow: Sequence[Network] = ()
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _conns: set[asyncio.StreamWriter] = field(default_factory=set)
    _servers: list[asyncio.Server] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bytes_total = Counter(
            "prfaas_link_bytes", "scaled KV bytes carried", registry=self.registry
        )
        self.capacity = Gauge(
            "prfaas_link_capacity_gbps", "nominal capacity (0 when down)", registry=self.registry
        )
        self.active = Gauge(
            "prfaas_link_transfers_active", "transfers on the link", registry=self.registry
        )
        self.refused = Counter(
            "prfaas_link_refused", "connections refused while down", registry=self.registry
        )
        self.forbidden = Counter(
            "prfaas_link_gateway_refused",
            "gateway requests refused (malformed, or an address outside --allow)",
            registry=self.registry,
        )
        self.capacity.set(self.shaper.gbps)

    async def start(self, host: str = "127.0.0.1") -> None:
        for listen, target in self.routes.items():

            async def handle(
                r: asyncio.StreamReader, w: asyncio.StreamWriter, target: tuple[str, int] = target
            ) -> None:
                await self._relay(r, w, target)

            self._servers.append(await asyncio.start_server(handle, host, listen))
        if self.gateway_port is not None:
            self._servers.append(await asyncio.start_server(self._gateway, host, self.gateway_port))

    async def stop(self) -> None:
        for s in self._servers:
            s.close()
        self.cut()

    def cut(self) -> None:
        for w in list(self._conns):
            w.close()
        self._conns.clear()

    def set(self, gbps: float | None = None, up: bool | None = None) -> None:
        if gbps is not None:
            self.shaper.gbps = gbps
        if up is not None:
            self.up = up
            if not up:
                self.cut()
        self.capacity.set(self.shaper.gbps if self.up else 0.0)

    def state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "up": self.up,
            "gbps": self.shaper.gbps,
            "rttMs": self.rtt_ms,
            "transfers": len(self._conns),
            "routes": {str(k): f"{h}:{p}" for k, (h, p) in self.routes.items()},
            "gateway": None
            if self.gateway_port is None
            else {"port": self.gateway_port, "allow": [str(n) for n in self.allow]},
        }

    async def _gateway(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            target = gateway_target(line, self.allow)
        except GatewayRefusedError as exc:
            self.forbidden.inc()
            log.warning("gateway: %s", exc)
            writer.write(b"ERR outside the networks\n")  # a fixed answer: decode reports it as is
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()
            return
        except (OSError, TimeoutError):
            writer.close()
            return
        await self._relay(reader, writer, target, first=line)

    async def _relay(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        target: tuple[str, int],
        first: bytes = b"",
    ) -> None:
        """Relay one transfer; ``first``: request bytes already read (the gateway's line)."""
        if not self.up:
            self.refused.inc()
            client_w.close()
            return
        try:
            up_r, up_w = await asyncio.open_connection(*target)
        except OSError:
            client_w.close()
            return
        self._conns.add(client_w)
        self.active.inc()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(_QUEUE_CHUNKS)

        async def upstream() -> None:  # the request line: small, not shaped
            if first:
                up_w.write(first)
                await up_w.drain()
            while data := await client_r.read(CHUNK):
                up_w.write(data)
                await up_w.drain()

        async def shape() -> None:
            while data := await up_r.read(CHUNK):
                await queue.put((self.shaper.schedule(len(data), time.monotonic()), data))
            await queue.put(None)

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                at, data = item
                delay = at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not self.up:
                    return
                client_w.write(data)
                await client_w.drain()
                self.bytes_total.inc(len(data))

        tasks = [asyncio.ensure_future(c) for c in (upstream(), shape(), deliver())]
        try:  # ends when the transfer is delivered or either side fails
            await asyncio.wait(tasks[1:], return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            self._conns.discard(client_w)
            self.active.dec()
            for w in (client_w, up_w):
                w.close()

    # -- admin API ---------------------------------------------------------------------------
    def admin_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/link", self._get)
        app.router.add_post("/link", self._post)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", metrics_handler(self.registry))
        return app

    async def _get(self, _: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _post(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be JSON"}, status=400)
        if not isinstance(body, dict) or set(body) - {"gbps", "up"}:
            return web.json_response({"error": "expected {'gbps': number, 'up': bool}"}, status=400)
        gbps, up = body.get("gbps"), body.get("up")
        if gbps is not None and (
            isinstance(gbps, bool) or not isinstance(gbps, int | float) or gbps <= 0
        ):
            return web.json_response({"error": "'gbps' must be a number > 0"}, status=400)
        if up is not None and not isinstance(up, bool):
            return web.json_response({"error": "'up' must be a boolean"}, status=400)
        self.set(None if gbps is None else float(gbps), up)
        return web.json_response(self.state())

    async def _health(self, _: web.Request) -> web.Response:
        return web.Response(text="OK")


def bytes_per_gbit(kv_byte_scale: float, speedup: float) -> float:
    return 1e9 / 8 * kv_byte_scale * speedup
