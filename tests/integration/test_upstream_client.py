"""The router's engine client (``prfaas.router.upstream``) against real servers on loopback: an
aiohttp app like our engines, and raw asyncio servers that misbehave on purpose. Each boundary
(reuse, idle cut-off, broken and silent answers, cancellation, streaming, back-pressure) has a
test that fails without it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvloop
from aiohttp import web

from prfaas.router.upstream import EngineCallError, UpstreamClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(coro: Awaitable[Any]) -> Any:
    return uvloop.run(coro)  # type: ignore[arg-type]


class _Counted:
    """An aiohttp server like an engine, counting the connections it accepted."""

    def __init__(self) -> None:
        self.peers: set[Any] = set()  # client (host, port) pairs: one per connection
        self.closed = asyncio.Event()

    @property
    def connections(self) -> int:
        return len(self.peers)

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername"))
        return await handler(request)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._count])
        app.router.add_post("/echo", self._echo)
        app.router.add_post("/close", self._close)
        app.router.add_post("/sse", self._sse)
        app.router.add_post("/big", self._big)
        app.router.add_post("/hang", self._hang)
        return app

    async def _echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=body, headers={"X-Rid": request.headers.get("X-Request-ID", "")},
                            content_type="application/json")  # fmt: skip

    async def _close(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="bye", headers={"Connection": "close"})

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        await out.write(b"data: 1\n\n")
        await asyncio.sleep(0.3)
        await out.write(b"data: [DONE]\n\n")
        await out.write_eof()
        return out

    async def _big(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (5 << 20))

    async def _hang(self, request: web.Request) -> web.Response:
        try:
            await asyncio.sleep(60)
        finally:
            self.closed.set()  # the client closed its connection: aiohttp cancels the handler
        return web.Response(text="late")


@asynccontextmanager
async def engine() -> AsyncIterator[tuple[str, _Counted]]:
    counted = _Counted()
    runner = web.AppRunner(counted.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", counted
    finally:
        await runner.cleanup()


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


def test_keep_alive_connections_are_reused_and_each_call_gets_its_answer() -> None:
    async def go() -> tuple[int, list[bytes], int]:
        async with engine() as (url, counted):
            client = UpstreamClient(2.0, 10.0)
            got = []
            for i in range(20):
                r = await client.post(url + "/echo", b'{"i": %d}' % i, {"X-Request-ID": f"r{i}"})
                got.append(await r.read() + r.headers["x-rid"].encode())
                r.release()
            idle = client.idle()
            client.close()
            return counted.connections, got, idle

    connections, got, idle = run(go())
    assert got == [b'{"i": %d}r%d' % (i, i) for i in range(20)]
    assert connections == 1
    assert idle == 1


def test_concurrent_calls_use_one_connection_each_then_share_the_pool() -> None:
    async def go() -> int:
        async with engine() as (url, counted):
            client = UpstreamClient(2.0, 10.0)

            async def one(i: int) -> bytes:
                r = await client.post(url + "/echo", b"%d" % i, {})
                try:
                    return await r.read()
                finally:
                    r.release()

            for _ in range(3):
                assert await asyncio.gather(*(one(i) for i in range(8))) == [
                    b"%d" % i for i in range(8)
                ]
            client.close()
            return counted.connections

    assert run(go()) == 8  # 3 rounds of 8 at once: 8 connections, not 24


def test_an_idle_connection_older_than_max_idle_is_not_reused() -> None:
    async def go() -> int:
        async with engine() as (url, counted):
            client = UpstreamClient(2.0, 10.0, max_idle_s=0.2)
            for _ in range(2):
                r = await client.post(url + "/echo", b"{}", {})
                await r.read()
                r.release()
                await asyncio.sleep(0.35)
            client.close()
            return counted.connections

    assert run(go()) == 2


def test_connection_close_answers_are_not_pooled() -> None:
    async def go() -> tuple[int, int]:
        async with engine() as (url, counted):
            client = UpstreamClient(2.0, 10.0)
            for _ in range(2):
                r = await client.post(url + "/close", b"{}", {})
                assert await r.read() == b"bye"
                r.release()
            idle = client.idle()
            client.close()
            return counted.connections, idle

    assert run(go()) == (2, 0)


def test_refused_connection_says_the_request_never_reached_the_engine() -> None:
    async def go() -> EngineCallError:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        client = UpstreamClient(2.0, 10.0)
        with pytest.raises(EngineCallError) as e:
            await client.post(f"http://127.0.0.1:{port}/echo", b"{}", {})
        return e.value

    assert run(go()).reached is False


def test_an_answer_cut_mid_body_fails_as_reached_and_its_connection_is_dropped() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"y" * 10)
        await writer.drain()
        writer.close()

    async def go() -> tuple[EngineCallError, int]:
        async with raw_server(cut) as url:
            client = UpstreamClient(2.0, 10.0)
            r = await client.post(url + "/x", b"{}", {})
            assert r.status == 200
            with pytest.raises(EngineCallError) as e:
                await r.read()
            r.release()
            return e.value, client.idle()

    err, idle = run(go())
    assert err.reached is True and "closed" in str(err)
    assert idle == 0


def test_a_silent_engine_fails_after_the_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(10)

    async def go() -> float:
        async with raw_server(silent) as url:
            client = UpstreamClient(2.0, 0.3)
            t0 = time.monotonic()
            with pytest.raises(EngineCallError, match="no answer"):
                await client.post(url + "/x", b"{}", {})
            return time.monotonic() - t0

    assert 0.25 < run(go()) < 2.0


def test_a_malformed_answer_is_an_error_not_a_hang() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async def go() -> None:
        async with raw_server(garbage) as url:
            client = UpstreamClient(2.0, 10.0)
            with pytest.raises(EngineCallError, match="malformed"):
                await asyncio.wait_for(client.post(url + "/x", b"{}", {}), 3)

    run(go())


def test_a_cancelled_call_closes_its_connection_and_the_engine_sees_it() -> None:
    async def go() -> tuple[bool, int]:
        async with engine() as (url, counted):
            client = UpstreamClient(2.0, 60.0)
            task = asyncio.create_task(client.post(url + "/hang", b"{}", {}))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            seen = await asyncio.wait_for(counted.closed.wait(), 5)
            return bool(seen), client.idle()

    assert run(go()) == (True, 0)


def test_sse_events_arrive_as_they_are_sent_and_the_stream_ends_cleanly() -> None:
    async def go() -> tuple[bytes, float, bytes, int]:
        async with engine() as (url, _):
            client = UpstreamClient(2.0, 10.0)
            t0 = time.monotonic()
            r = await client.post(url + "/sse", b"{}", {})
            assert r.content_type.startswith("text/event-stream")
            first = await r.readany()
            first_at = time.monotonic() - t0
            rest = b"".join([c async for c in r.iter_any()])
            r.release()
            return first, first_at, rest, client.idle()

    first, first_at, rest, idle = run(go())
    assert first == b"data: 1\n\n"
    assert first_at < 0.25  # before the server's 0.3-s pause: not buffered to the end
    assert rest == b"data: [DONE]\n\n"
    assert idle == 1  # a chunked stream read to its end keeps its connection


def test_a_body_larger_than_the_high_water_mark_arrives_whole() -> None:
    async def go() -> tuple[int, int]:
        async with engine() as (url, _):
            client = UpstreamClient(2.0, 10.0)
            r = await client.post(url + "/big", b"{}", {})
            total = 0
            while chunk := await r.readany():
                total += len(chunk)
                await asyncio.sleep(0.01)  # a slow reader: reading pauses, then resumes
            r.release()
            return total, client.idle()

    assert run(go()) == (5 << 20, 1)


def test_header_values_with_line_breaks_are_refused_before_sending() -> None:
    async def go() -> tuple[EngineCallError, int]:
        async with engine() as (url, counted):
            client = UpstreamClient(2.0, 10.0)
            with pytest.raises(EngineCallError, match="line break") as e:
                await client.post(url + "/echo", b"{}", {"X-Request-ID": "a\r\nX-Evil: 1"})
            return e.value, counted.connections

    err, connections = run(go())
    assert err.reached is False
    assert connections == 0  # nothing was sent


_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_a_reused_connection_closed_as_we_send_is_retried_once_on_a_new_one() -> None:
    """The keep-alive race: the engine drops an idle connection (its timeout) just as the next
    request goes out on it. The first request of each connection is answered, the second read
    and dropped without an answer."""
    conns = []

    async def first_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        writer.write(_OK)
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async def go() -> tuple[list[bytes], int]:
        async with raw_server(first_only) as url:
            client = UpstreamClient(2.0, 10.0)
            got = []
            for _ in range(3):
                r = await client.post(url + "/x", b"{}", {})
                got.append(await r.read())
                r.release()
            return got, len(conns)

    got, n = run(go())
    assert got == [b"ok"] * 3
    assert n == 3  # every reuse failed and was retried on a new connection


def test_an_engine_that_drops_every_request_fails_after_one_retry() -> None:
    conns = []

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async def go() -> EngineCallError:
        async with raw_server(drop) as url:
            client = UpstreamClient(2.0, 10.0)
            with pytest.raises(EngineCallError) as e:
                await client.post(url + "/x", b"{}", {})
            return e.value

    err = run(go())
    assert err.reached is True
    assert len(conns) == 1  # a new connection that is dropped is not retried


def test_connections_to_engines_that_went_quiet_are_closed_and_forgotten() -> None:
    """Pods come and go: an engine no longer called must not keep its address and sockets in
    the pool for ever."""

    async def go() -> tuple[int, int, int]:
        async with engine() as (old, _), engine() as (new, _):
            client = UpstreamClient(2.0, 10.0, max_idle_s=0.2)
            r = await client.post(old + "/echo", b"{}", {})
            await r.read()
            r.release()
            before = client.engines()
            await asyncio.sleep(0.35)
            r = await client.post(new + "/echo", b"{}", {})
            await r.read()
            r.release()  # a release after max_idle_s sweeps the pool
            return before, client.engines(), client.idle()

    assert run(go()) == (1, 1, 1)
