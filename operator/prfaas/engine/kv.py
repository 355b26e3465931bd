"""KVCache hand-off between engines over TCP: a store on the prefill side, a fetch on decode.

Protocol (one transfer per connection): the decode side sends ``FETCH <key>\\n``; the prefill
side answers ``OK <nbytes>\\n`` and the bytes, or ``ERR <reason>\\n``. A key is a vLLM transfer
id or an SGLang ``room:<bootstrap_room>``; under SGLang the decode may ask before the prefill
has finished, so the server waits (up to a timeout) for the key to appear. A fetch takes the
entry; entries never fetched expire.

Decode pulls, as vLLM's NIXL connector does; a cross-datacenter pull goes through the link
shaper (``prfaas.engine.link``), which the prefill side advertises as its KV address.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

CHUNK = 64 * 1024
_ZEROS = bytes(CHUNK)


class KVTransferError(Exception):
    """The KVCache did not arrive (link down, peer gone, unknown key, timeout)."""


class KVStore:
    def __init__(self, ttl_s: float = 300.0) -> None:
        self.ttl_s = ttl_s
        self._items: dict[str, asyncio.Future[int]] = {}
        self._born: dict[str, float] = {}
        self._swept = time.monotonic()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: str, nbytes: int) -> None:
        self._expire()
        fut = self._items.get(key)
        if fut is None or fut.done():
            fut = asyncio.get_running_loop().create_future()
            self._items[key] = fut
        fut.set_result(nbytes)
        self._born[key] = time.monotonic()

    def offered(self, max_age_s: float) -> int:
        """Bytes stored for at most ``max_age_s`` and not taken: about to cross (an older one
        was orphaned by a failure; it waits out its ttl, but no decode is coming for it)."""
        since = time.monotonic() - max_age_s
        return sum(
            f.result()
            for k, f in self._items.items()
            if f.done() and not f.cancelled() and self._born.get(k, since) > since
        )

    def ready(self, key: str) -> bool:
        fut = self._items.get(key)
        return fut is not None and fut.done() and not fut.cancelled()

    async def take(self, key: str, timeout: float) -> int | None:
        fut = self._items.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._items[key] = fut
            self._born[key] = time.monotonic()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return None
        finally:
            if self._items.get(key) is fut:
                del self._items[key]
                self._born.pop(key, None)

    def _expire(self) -> None:
        now = time.monotonic()
        if now - self._swept < self.ttl_s / 10:  # a sweep scans every entry: not per put
            return
        self._swept = now
        old = now - self.ttl_s
        for key in [k for k, born in self._born.items() if born < old]:
            fut = self._items.pop(key, None)
            self._born.pop(key, None)
            if fut is not None and not fut.done():
                fut.cancel()


class KVServer:
    """Serves the store on a TCP port; ``on_sent`` counts bytes put on the wire, ``sending``
    holds the bytes of transfers under way not written yet.

    A FETCH for a key that is not there yet waits at most ``wait_s``, and at most
    ``max_waiting`` FETCHes wait at once (more are answered ``ERR busy``): whoever reaches the
    port cannot hold connections open by asking for keys that never come.
    """

    def __init__(
        self,
        store: KVStore,
        wait_s: float = 30.0,
        on_sent: Callable[[int], None] | None = None,
        max_waiting: int = 256,
    ) -> None:
        self.store = store
        self.wait_s = wait_s
        self.on_sent = on_sent
        self.max_waiting = max_waiting
        self.waiting = 0
        self.sending = 0
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        left = 0
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            verb, _, key = line.decode("ascii", "replace").strip().partition(" ")
            if verb != "FETCH" or not key:
                writer.write(b"ERR bad request\n")
                return
            if self.waiting >= self.max_waiting and not self.store.ready(key):
                writer.write(b"ERR busy\n")
                return
            self.waiting += 1
            try:
                nbytes = await self.store.take(key, self.wait_s)
            finally:
                self.waiting -= 1
            if nbytes is None:
                writer.write(b"ERR unknown key\n")
                return
            left = nbytes
            self.sending += nbytes
            writer.write(f"OK {nbytes}\n".encode())
            while left > 0:
                n = min(left, CHUNK)
                writer.write(_ZEROS[:n])
                await writer.drain()
                left -= n
                self.sending -= n
                if self.on_sent is not None:
                    self.on_sent(n)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self.sending -= left  # a transfer cut short: what it did not send is off the link
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def fetch(host: str, port: int, key: str, timeout: float) -> int:
    """Pull one transfer; returns the bytes received."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(f"FETCH {key}\n".encode())
                await writer.drain()
                head = (await reader.readline()).decode("ascii", "replace").strip()
                left = total = _size(head, f"{host}:{port}")
                while left > 0:
                    chunk = await reader.read(min(left, CHUNK))
                    if not chunk:
                        raise KVTransferError(f"{host}:{port}: closed after {total - left} bytes")
                    left -= len(chunk)
                return total
            finally:
                writer.close()
    except TimeoutError:
        raise KVTransferError(f"{host}:{port}: no KVCache within {timeout:.0f} s") from None
    except OSError as exc:  # a local error (refused, unreachable): no peer bytes in it
        raise KVTransferError(f"{host}:{port}: {exc.strerror or type(exc).__name__}") from None


_ANSWERS = {
    "ERR unknown key": "unknown key",
    "ERR bad request": "bad request",
    "ERR busy": "busy",
    "ERR outside the networks": "the link gateway refused it: outside the networks it serves",
}


def _size(head: str, where: str) -> int:
    """The size in an ``OK <n>`` answer; anything else is reported by kind, never echoed
    (the address came from a request: echoing would make decode a banner grabber)."""
    if head.startswith("OK ") and head[3:].isdigit():
        return int(head[3:])
    if not head:
        raise KVTransferError(f"{where}: connection closed")
    raise KVTransferError(f"{where}: {_ANSWERS.get(head, 'not a KV peer')}")
