"""Child processes of the demo: each in its own session, logged to a file, stopped together."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

_RESERVED: set[int] = set()


def reserve_port(low: int = 20_000, high: int = 32_000) -> int:
    """A loopback port for a process that may only bind it minutes from now (an engine slot
    started when the operator scales up). Taken below Linux's ephemeral range (32768+), where
    the kernel never hands it to an outgoing connection meanwhile, and never twice."""
    for _ in range(1000):
        port = random.randrange(low, high)
        if port in _RESERVED:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _RESERVED.add(port)
        return port
    raise ProcessError(f"no free port in {low}-{high}")


class ProcessError(RuntimeError):
    """A child did not come up; the message ends with the tail of its log."""


def prfaas_argv() -> list[str]:
    exe = Path(sys.executable).parent / "prfaas"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "prfaas.cli"]


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class Proc:
    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, probe: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ProcessError(f"{self.name} exited:\n{self.tail()}")
            if probe():
                return
            time.sleep(0.1)
        raise ProcessError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")

    def stop(self, grace_s: float = 5.0) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


class Group:
    """Processes stopped together (newest first), also when start-up fails half-way."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        p = Proc(name, argv, self.log_dir / f"{name}.log", env)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()
