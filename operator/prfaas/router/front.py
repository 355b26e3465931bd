"""The router's HTTP/1.1 server: an asyncio ``Protocol`` over httptools (llhttp, in C).

Why not aiohttp's server: it was the largest single cost left in the router's CPU per request
(``make bench-http-front``: 0.120 ms for an aiohttp app answering a fixed body, 0.028 for a
bare httptools protocol; Benchmark A's open loop measures the difference on the router itself).
What a client-facing server must still do, all here and each pinned by a test on a real
process: keep-alive and pipelining (answers in order), ``Expect: 100-continue``, a body limit
(413, by ``Content-Length`` before a byte of the body is read, or as it arrives), a body
timeout (408), a bound on the request head (431) and on the time to send it (the idle timeout,
also between requests: slowloris), streamed answers (chunked) with flow control, and a handler
cancelled when its client goes away. Everything else (routes, errors, metrics) is the app's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

import httptools
import orjson

from prfaas.serving.openai import RequestError

log = logging.getLogger("prfaas.router.front")
JSON = "application/json"
_MAX_HEAD_BYTES = 64 << 10  # request line and headers (aiohttp: 8190 per line, ~100 headers)
_CLOSE = "Connection: close\r\n"
_KEEP = "Connection: keep-alive\r\n"  # to an HTTP/1.0 client that asked for it
_PHRASES = {s.value: s.phrase for s in HTTPStatus}


def _origin_form(url: bytes) -> bytes:
    """The path of an absolute-form target (``http://host/v1/completions``), which a server
    must accept (RFC 9112, 3.2.2); anything else (``*``, not a URL) as it is: no route has it."""
    try:
        return httptools.parse_url(url).path or b"/"
    except httptools.HttpParserInvalidURLError:
        return url


@dataclass(frozen=True, slots=True)
class FrontLimits:
    max_body_bytes: int = 16 << 20
    body_timeout_s: float = 60.0  # the whole body, once a handler asks for it: 408 after
    idle_timeout_s: float = 15.0  # a whole head, after connecting or after the last answer
    shutdown_s: float = 10.0  # in-flight requests finish within this on shutdown


class Response:
    """A whole answer, written with one ``write``."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        body: bytes,
        status: int = 200,
        content_type: str = JSON,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.body = body
        self.status = status
        self.content_type = content_type
        self.headers = headers


def json_response(
    obj: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(obj), status, JSON, headers)


def error_response(exc: RequestError) -> Response:
    return json_response(exc.body(), exc.status, exc.headers)


class Request:
    """One request: its head at once, its body when a handler reads it."""

    __slots__ = ("_chunks", "_conn", "_continue", "_done", "_size", "_too_large", "_waiter",
                 "headers", "keep_alive", "method", "path", "version")  # fmt: skip

    def __init__(
        self, conn: _Conn, method: str, path: str, headers: dict[str, str], version: str
    ) -> None:
        self._conn = conn
        self.method = method
        self.path = path
        self.headers = headers  # names in lower case
        self.version = version
        self.keep_alive = True
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False
        self._waiter: asyncio.Future[None] | None = None
        self._continue = headers.get("expect", "").lower() == "100-continue"
        self._too_large = False

    def _connection(self, close: bool = False) -> str:
        if close or not self.keep_alive:
            return _CLOSE
        return _KEEP if self.version == "1.0" else ""

    def _feed(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._conn.front.limits.max_body_bytes:
            self._too_large = True
            self._chunks.clear()
            self._wake()
        elif not self._too_large:
            self._chunks.append(chunk)

    def _complete(self) -> None:
        self._done = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> bytes:
        """The whole body: 413 over the limit, 408 if it has not all come within the body
        timeout."""
        limits = self._conn.front.limits
        if not self._done and not self._too_large:
            if self._continue:
                self._continue = False
                self._conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            timeout = limits.body_timeout_s
            try:
                async with asyncio.timeout(None if math.isinf(timeout) else timeout):
                    while not self._done and not self._too_large:
                        self._waiter = self._conn.front.loop.create_future()
                        await self._waiter
            except TimeoutError:
                raise RequestError(408, f"request body not received within {timeout:g} s",
                                   "body_timeout") from None  # fmt: skip
        if self._too_large:
            raise RequestError(413, f"request body over {limits.max_body_bytes} bytes",
                               "body_too_large")  # fmt: skip
        if len(self._chunks) != 1:
            self._chunks[:] = [b"".join(self._chunks)]
        return self._chunks[0]

    async def stream(self, status: int, headers: Mapping[str, str], content_type: str) -> Stream:
        """Start a streamed answer (chunked; close-delimited for an HTTP/1.0 client)."""
        chunked = self.version != "1.0"
        if not chunked:
            self.keep_alive = False
        head = _head(status, content_type, headers, None if chunked else -1, self._connection())
        self._conn.write(head)
        return Stream(self._conn, chunked)


class Stream:
    """A streamed answer; ``write`` waits while the client does not keep up."""

    __slots__ = ("_chunked", "_conn", "ended")

    def __init__(self, conn: _Conn, chunked: bool) -> None:
        self._conn = conn
        self._chunked = chunked
        self.ended = False

    async def write(self, data: bytes) -> None:
        if not data:
            return
        conn = self._conn
        if conn.transport is None or conn.transport.is_closing():
            raise ConnectionResetError("client gone")
        conn.write(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)
        if conn.paused:
            await conn.drain()

    async def end(self) -> None:
        if not self.ended:
            self.ended = True
            if self._chunked:
                self._conn.write(b"0\r\n\r\n")


Reply = Response | Stream
App = Callable[[Request], Awaitable[Reply]]


def _head(
    status: int,
    content_type: str,
    headers: Mapping[str, str] | None,
    length: int | None,  # None: chunked; -1: close-delimited
    connection: str,  # "", _CLOSE or _KEEP
) -> bytes:
    extra = ""
    if headers:
        for k, v in headers.items():
            if "\r" in v or "\n" in v:  # never a header injected by a value passed on
                raise ValueError(f"CR/LF in header {k}")
            extra += f"{k}: {v}\r\n"
    size = (
        "Transfer-Encoding: chunked\r\n" if length is None
        else "" if length < 0 else f"Content-Length: {length}\r\n"
    )  # fmt: skip
    return (
        f"HTTP/1.1 {status} {_PHRASES.get(status, 'Unknown')}\r\n"
        f"Content-Type: {content_type}\r\n{size}Date: {_date()}\r\n{extra}"
        f"{connection}\r\n"
    ).encode("latin-1")


_now = [0, ""]


def _date() -> str:
    """The Date header, formatted once a second."""
    sec = int(time.time())
    if sec != _now[0]:
        _now[0], _now[1] = sec, formatdate(sec, usegmt=True)
    return str(_now[1])


class Front:
    """Serves ``app`` on a listening socket; ``close()`` lets in-flight requests finish."""

    def __init__(self, app: App, limits: FrontLimits) -> None:
        self.app = app
        self.limits = limits
        self.conns: set[_Conn] = set()
        self.closing = False
        self.loop = asyncio.get_running_loop()  # kept: asking for it each time costs a getpid
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, reuse_port: bool = False) -> None:
        self._server = await self.loop.create_server(
            lambda: _Conn(self), host, port, reuse_port=reuse_port or None, backlog=1024
        )
        self._sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Close connections idle past the limit: one timer for all, not one per request."""
        idle = self.limits.idle_timeout_s
        while True:
            await asyncio.sleep(min(1.0, idle / 4))
            now = self.loop.time()
            for c in list(self.conns):
                if c.idle_since is not None and now - c.idle_since > idle:
                    c.close()

    async def close(self) -> None:
        self.closing = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for c in list(self.conns):
            if c.task is None:
                c.close()
        busy = [c.task for c in self.conns if c.task is not None]
        if busy:
            await asyncio.wait(busy, timeout=self.limits.shutdown_s)
        for c in list(self.conns):
            c.close()


class _Conn(asyncio.Protocol):
    """One client connection: parses requests, answers them in order, one at a time."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.heads: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.req: Request | None = None  # the request being parsed
        self.queue: deque[Request] = deque()  # pipelined, waiting for their turn
        self.task: asyncio.Task[None] | None = None  # the request being answered
        self.answering: Request | None = None  # ... which is this one
        self.refusal: Response | None = None  # bad bytes read: this answer after the others
        self.idle_since: float | None = None
        self.paused = False
        self._drain: asyncio.Future[None] | None = None
        self._reading = True
        self.lingering = False  # answered before its body ended: dropping the rest, then closing
        self.upgrade = False  # asked to switch protocols: what follows is not HTTP/1.1

    # -- transport callbacks -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self.front.conns.add(self)
        self.idle_since = self.front.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.conns.discard(self)
        self.transport = None
        self.idle_since = None
        if self.task is not None:
            self.task.cancel()  # the client went away: so does its request upstream
        self.queue.clear()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("client gone"))

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.upgrade = True  # no protocol switch here: answer, then close
        except httptools.HttpParserError as exc:
            if self.head_bytes > _MAX_HEAD_BYTES:
                self._refuse(431, "request head over 64 KiB", "head_too_large")
            else:
                self._refuse(400, f"malformed HTTP request: {exc}", "bad_http")

    # -- parser callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.heads = []
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.heads.append((name, value))
        self._count(len(name) + len(value))

    def _count(self, n: int) -> None:
        self.head_bytes += n
        if self.head_bytes > _MAX_HEAD_BYTES:
            raise ValueError("head too large")  # stops the parser: 431

    def on_headers_complete(self) -> None:
        headers: dict[str, str] = {}
        for name, value in self.heads:
            k, v = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        p = self.parser
        url = self.url if self.url[:1] == b"/" else _origin_form(self.url)
        q = url.find(b"?")
        path = (url if q < 0 else url[:q]).decode("latin-1")
        req = Request(self, p.get_method().decode("latin-1"), path, headers, p.get_http_version())
        req.keep_alive = p.should_keep_alive()
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.front.limits.max_body_bytes:
            req._too_large = True  # 413 without waiting for a byte of it
        self.req = req
        if self.lingering:
            return  # pipelined after an answer that closes the connection: never answered
        self.idle_since = None
        if self.task is None:
            self._start(req)
        else:  # pipelined: read no further until its turn (its body buffers at most a read)
            self.queue.append(req)
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        if self.req is not None and not self.lingering:
            self.req._feed(body)

    def on_message_complete(self) -> None:
        if self.lingering:
            self.close()
        elif self.req is not None:
            self.req._complete()
            self.req = None

    # -- answering ---------------------------------------------------------------------------
    def _start(self, req: Request) -> None:
        self.answering = req
        self.task = self.front.loop.create_task(self._answer(req))

    def _pause_reading(self) -> None:
        if self._reading and self.transport is not None:
            self.transport.pause_reading()
            self._reading = False

    def _resume_reading(self) -> None:
        if not self._reading and self.transport is not None:
            self.transport.resume_reading()
            self._reading = True

    async def _answer(self, req: Request) -> None:
        try:
            reply = await self.front.app(req)
        except asyncio.CancelledError:
            self.task = self.answering = None
            raise
        except Exception:  # the app answers its own errors; this is a bug in it
            log.exception("unexpected error answering %s %s", req.method, req.path)
            reply = error_response(RequestError(500, "internal error", "internal_error"))
        self._finish(req, reply)

    def _finish(self, req: Request, reply: Reply) -> None:
        self.task = self.answering = None  # an idle connection keeps no body
        if self.transport is None:
            return
        # a body not read to its end leaves the connection unusable; so does shutdown
        close = not req.keep_alive or not req._done or self.front.closing or self.upgrade
        if isinstance(reply, Response):
            self._send(reply, req._connection(close), req.method == "HEAD")
        elif not reply.ended:
            close = True  # a stream the app did not end: the client sees it cut
        if not req._done:  # read and drop the rest, so that the client can read the answer
            self.lingering = True  # closed at the body's end, or by the sweeper when idle
            self.idle_since = self.front.loop.time()
        elif close:
            self.close()
        elif self.queue:
            self._start(self.queue.popleft())
            if not self.queue and not self._reading and self.refusal is None:
                self._resume_reading()
        elif self.refusal is not None:
            self._send(self.refusal, _CLOSE)
            self.close()
        else:
            self.idle_since = self.front.loop.time()

    def _refuse(self, status: int, message: str, code: str) -> None:
        """An answer from the front itself: the bytes read cannot be parsed. The requests read
        whole before them are answered first, in order; a request the bad bytes cut (in its
        body) gets this answer instead of its own; then the connection closes."""
        if self.transport is None or self.refusal is not None:
            return
        self._pause_reading()  # nothing after the bad bytes is read
        self.refusal = error_response(RequestError(status, message, code))
        cut, self.req = self.req, None
        if cut is not None and cut in self.queue:
            self.queue.remove(cut)
        elif cut is not None and cut is self.answering and self.task is not None:
            self.task.cancel()  # waiting for a body that will not come
            self.task = self.answering = None
        if self.task is None:
            self._send(self.refusal, _CLOSE)
            self.close()

    def _send(self, reply: Response, connection: str, head_only: bool = False) -> None:
        head = _head(reply.status, reply.content_type, reply.headers, len(reply.body), connection)
        self.write(head if head_only else head + reply.body)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        if self.transport is None:
            raise ConnectionResetError("client gone")
        self._drain = self.front.loop.create_future()
        await self._drain

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.idle_since = None


async def serve(
    apps: list[tuple[App, str, int]], limits: FrontLimits, reuse_port: bool = False
) -> None:
    """Serve each (app, host, port) until cancelled; then let in-flight requests finish."""
    fronts = []
    try:
        for app, host, port in apps:
            front = Front(app, limits)
            await front.start(host, port, reuse_port)
            fronts.append(front)
        await asyncio.Event().wait()
    finally:
        for f in fronts:
            with contextlib.suppress(Exception):
                await f.close()


Handler = Callable[[Request], Awaitable[Reply]]


class Routes:
    """Handlers by path and method; an unknown path is a 404, a known one with another method
    a 405 (raised as ``RequestError``: the app answers it in its own error shape)."""

    def __init__(self) -> None:
        self._by_path: dict[str, dict[str, Handler]] = {}

    def add(self, method: str, path: str, handler: Handler) -> None:
        self._by_path.setdefault(path, {})[method] = handler

    def find(self, request: Request) -> Handler:
        methods = self._by_path.get(request.path)
        if methods is None:
            raise RequestError(404, "Not Found", "not_found")
        handler = methods.get(request.method)
        if handler is None:
            raise RequestError(405, "Method Not Allowed", "method_not_allowed",
                               {"Allow": ", ".join(methods)})  # fmt: skip
        return handler
