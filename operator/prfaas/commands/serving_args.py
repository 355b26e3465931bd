"""Arguments the engine, link and router commands share, parsed with one-line errors."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any

from prfaas.commands.errors import CommandError


def host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def positive(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return x


def non_negative(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not x >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return x


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value!r}")
    return int(value)


def workers(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 256:
        raise argparse.ArgumentTypeError(f"expected a number of processes 1-256, got {value!r}")
    return int(value)


def port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port 1-65535, got {value!r}")
    return int(value)


def add_scaling(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--speedup",
        type=positive,
        default=1.0,
        help="divide every duration by this (the case study in seconds: 20); default 1",
    )
    p.add_argument(
        "--kv-byte-scale",
        type=positive,
        default=1e-3,
        help="multiply KV bytes on the wire by this (engines and link must agree); default 1e-3",
    )


def add_logging(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=("json", "plain"), default="json")
    p.add_argument("-v", "--verbose", action="store_true")


def serve(main: Coroutine[Any, Any, None]) -> int:
    """Run a server coroutine until SIGINT/SIGTERM; a port in use is a one-line error."""

    async def runner() -> None:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        import uvloop  # libuv event loop: the router's per-request cost is mostly I/O plumbing

        uvloop.install()
    except ImportError:  # not on every platform; asyncio's own loop works, slower
        pass
    try:
        asyncio.run(runner())
    except OSError as exc:
        raise CommandError(f"cannot listen: {exc.strerror or exc}") from None
    return 0
