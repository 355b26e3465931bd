"""The router's HTTP/1.1 client to its engines, on the hot path of every request.

aiohttp's client cost the router more CPU than everything else it does per request (Benchmark
A: its request and response machinery was about 40% of the router's samples, a 2-phase request
makes two calls). This client does only what the P/D flow needs:

- keep-alive connections pooled per engine (last in, first out), one connection per call in
  flight; an idle connection is reused only within ``max_idle_s`` (4 s: below uvicorn's 5-s
  keep-alive, which vLLM and SGLang serve with). An engine may still close an idle connection
  as we send on it (its timeout, a restart): a reused connection closed before any byte of an
  answer is retried once on a new one, as HTTP clients do for that race;
- a request is one ``write`` (head and body together);
- responses parsed by httptools (llhttp, the C parser uvicorn uses): ``Content-Length``,
  chunked (SSE streams) and close-delimited bodies; reading pauses above ``_HIGH_WATER``
  buffered bytes until the reader catches up;
- ``read_timeout_s`` between bytes, ``connect_timeout_s`` to connect; a call cancelled (a
  deadline, the client gone) closes its connection, which is never reused half-read.

Failures raise ``EngineCallError``; ``reached`` says whether the engine may have received the
request (False only when no connection was made).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from functools import lru_cache
from typing import cast
from urllib.parse import urlsplit

import httptools

_HIGH_WATER = 1 << 20  # buffered body bytes before reading pauses
_MAX_IDLE_PER_HOST = 512


class EngineCallError(Exception):
    """A call that failed: not connected (``reached`` False), or broken, malformed or silent
    after the request was sent."""

    def __init__(self, message: str, reached: bool = True) -> None:
        super().__init__(message)
        self.reached = reached


@lru_cache(maxsize=4096)
def _split(url: str) -> tuple[tuple[str, int, bool], bytes, bytes]:
    """(host, port, tls), the request target and the Host header of ``url``."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise EngineCallError(f"not an http(s) URL: {url!r}", reached=False)
    tls = u.scheme == "https"
    port = u.port or (443 if tls else 80)
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    host = u.netloc.rpartition("@")[2]
    return (u.hostname, port, tls), target.encode(), host.encode()


class _Conn(asyncio.Protocol):
    """One connection: a response at a time, parsed as bytes arrive."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.peer_closed = False  # the engine ended the connection (not our timeout or close)
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._begin()

    def _begin(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_done = False
        self.done = False
        self.keep_alive = False
        self.error: EngineCallError | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self._name = b""
        self.received = False  # a byte of this call's answer arrived

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("the engine switched protocols")
        except httptools.HttpParserError as exc:
            self._fail(f"malformed HTTP answer: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.peer_closed = True
        self.closed = True
        if self.head_done and not self.done and exc is None and self._until_close():
            self.done = True  # a body delimited by the end of the connection
        elif not self.done:
            self._fail("the engine closed the connection" + (f": {exc}" if exc else ""))
        self._wake()

    # -- httptools callbacks -----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if name:
            self._name = name
            self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        else:  # a value split across reads continues the last header
            key = self._name.decode("latin-1").lower()
            self.headers[key] += value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.done = True
        self.keep_alive = self._parser.should_keep_alive()
        self._wake()

    # -- the caller's side -------------------------------------------------------------------
    def _until_close(self) -> bool:
        h = self.headers
        return "content-length" not in h and "chunked" not in h.get("transfer-encoding", "")

    def _fail(self, message: str) -> None:
        if self.error is None:
            self.error = EngineCallError(message)
        self.close()
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def until(self, ready: Callable[[_Conn], bool], timeout_s: float) -> None:
        """Wait until ``ready(self)``; the call's failure is raised (silence over ``timeout_s``
        between events is one)."""
        while not ready(self):
            if self.error is not None:
                raise self.error
            await self._wait(timeout_s)

    async def _wait(self, timeout_s: float) -> None:
        """Until the next event (head, body bytes, end, failure)."""
        self._waiter = w = self._loop.create_future()
        timer = self._loop.call_later(timeout_s, self._silent, timeout_s)
        try:
            await w
        finally:
            timer.cancel()
            self._waiter = None

    def _silent(self, timeout_s: float) -> None:
        self._fail(f"no answer from the engine for {timeout_s:g} s")

    def take(self) -> bytes:
        data = b"".join(self.chunks) if len(self.chunks) > 1 else self.chunks.popleft()
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return data

    def reusable(self) -> bool:
        """Its answer read to the end, nothing left unread, still open."""
        ok = self.done and self.keep_alive and self.error is None and not self.closed
        return ok and not self.chunks

    def fresh(self, now: float, max_idle_s: float) -> bool:
        """Idle, open and young enough to be reused."""
        return not self.closed and now - self.idle_since < max_idle_s

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _head(c: _Conn) -> bool:
    return c.head_done


def _end(c: _Conn) -> bool:
    return c.done


def _some_or_end(c: _Conn) -> bool:
    return bool(c.chunks) or c.done


class UpstreamResponse:
    """An engine's answer once its head arrived; ``release()`` (body read: the connection goes
    back to the pool) or ``close()`` when done with it."""

    __slots__ = ("_client", "_conn", "_key", "headers", "status")

    def __init__(self, client: UpstreamClient, key: tuple[str, int, bool], conn: _Conn) -> None:
        self._client, self._key, self._conn = client, key, conn
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers  # names in lower case

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    async def readany(self) -> bytes:
        """The body bytes that arrived since the last read (waiting for some); b"" at its end."""
        c = self._conn
        await c.until(_some_or_end, self._client.read_timeout_s)
        return c.take() if c.chunks else b""

    async def read(self) -> bytes:
        """The whole body."""
        c = self._conn
        await c.until(_end, self._client.read_timeout_s)
        return c.take() if c.chunks else b""

    async def iter_any(self) -> AsyncIterator[bytes]:
        while chunk := await self.readany():
            yield chunk

    def release(self) -> None:
        """Back to the pool if the answer was read to its end, else closed."""
        self._client.put(self._key, self._conn)

    def close(self) -> None:
        self._conn.close()


class UpstreamClient:
    def __init__(
        self, connect_timeout_s: float, read_timeout_s: float, max_idle_s: float = 4.0
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_idle_s = max_idle_s
        self._idle: dict[tuple[str, int, bool], list[_Conn]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._swept = time.monotonic()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        """POST ``body`` to ``url``; the answer once its head arrived. The caller releases or
        closes it."""
        key, target, host = _split(url)
        head = [b"POST ", target, b" HTTP/1.1\r\nHost: ", host,
                b"\r\nContent-Length: %d\r\n" % len(body)]  # fmt: skip
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise EngineCallError(f"header {name} holds a line break", reached=False)
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        head.append(b"\r\n")
        request = b"".join(head) + body
        for retry in (False, True):
            conn, reused = await self._get(key)
            try:
                assert conn.transport is not None
                conn.transport.write(request)
                await conn.until(_head, self.read_timeout_s)
            except EngineCallError:
                conn.close()
                if reused and conn.peer_closed and not conn.received and not retry:
                    continue  # the keep-alive race: closed as we sent, nothing answered
                raise
            except BaseException:
                conn.close()
                raise
            return UpstreamResponse(self, key, conn)
        raise AssertionError("unreachable")  # the second attempt returns or raises

    async def _get(self, key: tuple[str, int, bool]) -> tuple[_Conn, bool]:
        """A connection to ``key`` and whether it was reused."""
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.fresh(now, self.max_idle_s):
                conn._begin()
                return conn, True
            conn.close()
        host, port, tls = key
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Conn(loop), host, port, ssl=self._context() if tls else None
                )
        except (OSError, TimeoutError) as exc:
            why = str(exc) or type(exc).__name__
            msg = f"cannot connect to {host}:{port}: {why}"
            raise EngineCallError(msg, reached=False) from None
        return conn, False

    def put(self, key: tuple[str, int, bool], conn: _Conn) -> None:
        now = time.monotonic()
        if now - self._swept > self.max_idle_s:
            self._sweep(now)
        idle = self._idle.setdefault(key, []) if conn.reusable() else None
        if idle is None or len(idle) >= _MAX_IDLE_PER_HOST:
            conn.close()
            return
        conn.idle_since = now
        idle.append(conn)

    async def call(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """POST and read the whole answer: (status, body); the connection goes back."""
        r = await self.post(url, body, headers)
        try:
            return r.status, await r.read()
        finally:
            r.release()

    def _sweep(self, now: float) -> None:
        """Close what can no longer be reused; forget engines without idle connections (pods
        come and go: their addresses must not pile up)."""
        self._swept = now
        for key, conns in list(self._idle.items()):
            keep = []
            for c in conns:
                if c.fresh(now, self.max_idle_s):
                    keep.append(c)
                else:
                    c.close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def idle(self) -> int:
        """Idle connections kept (for tests)."""
        return sum(len(v) for v in self._idle.values())

    def engines(self) -> int:
        """Engines with idle connections kept (for tests)."""
        return len(self._idle)

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
