"""The one process supervisor of the dev tooling (control plane, Prometheus, demo, benchmarks,
tests): every child in its own session (process group), logged to a file, stopped by group.

    with Group(log_dir) as group:
        p = group.start("engine-0", [*prfaas_argv(), "engine", ...])
        p.wait_ready(lambda: http_ok(url + "/health"))
    # stopped, newest first: SIGTERM to each group, SIGKILL after the grace period
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self


class ProcessError(RuntimeError):
    """A child did not come up or did not go away; start-up messages end with its log's tail."""


def prfaas_argv() -> list[str]:
    """How to run the ``prfaas`` command of this environment."""
    exe = Path(sys.executable).parent / "prfaas"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "prfaas.cli"]


def _pdeathsig_hook() -> Callable[[], None] | None:
    """A preexec hook that SIGKILLs the child when its parent dies (Linux ``prctl``).

    Resolved here, in the parent: the hook runs between fork and exec, where loading
    libraries is unsafe in a multi-threaded parent.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)

    def hook() -> None:  # pragma: no cover - runs in the child
        prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)

    return hook


def _exited(pid: int) -> bool:
    """``pid`` is gone or a zombie. An exiting process loses its command line before it turns
    into a zombie, so ``_pid_runs`` is False a moment before the process has really ended."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def _pid_runs(pid: int, binary: str) -> bool:
    """Whether ``pid`` is alive, not a zombie, and still runs ``binary`` (guards pid reuse)."""
    proc = Path("/proc") / str(pid)
    if not Path("/proc/self").exists():  # not Linux: best effort
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        stat = (proc / "stat").read_text()
        argv0 = (proc / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    return argv0 == binary


@dataclass
class Proc:
    """A child process. Started by :meth:`spawn`, or re-attached by pid (:meth:`from_json`) by a
    later Python process, as ``make cluster-down`` does with what ``make cluster`` left running."""

    name: str
    binary: str  # argv[0]: with the pid, tells our process from a reused pid
    log: Path
    pid: int
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        log: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        append: bool = False,
        die_with_parent: bool = False,
    ) -> Proc:
        """Start ``argv`` with ``env`` added to ours; stdout and stderr go to ``log``
        (truncated unless ``append``). ``die_with_parent``: SIGKILLed if we die (Linux)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab" if append else "wb") as out:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals the whole group
                env={**os.environ, **(env or {})},
                cwd=cwd,
                preexec_fn=_pdeathsig_hook() if die_with_parent else None,
            )
        return cls(name, str(argv[0]), log, popen.pid, popen)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return _pid_runs(self.pid, self.binary)

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, probe: Callable[[], bool], timeout: float = 30.0) -> None:
        """Until ``probe()`` is true (OSError and ValueError count as not yet); raises
        :class:`ProcessError` with the log's tail if the child exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ProcessError(f"{self.name} exited during start-up:\n{self.tail()}")
            with contextlib.suppress(OSError, ValueError):
                if probe():
                    return
            time.sleep(0.1)
        raise ProcessError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM to its group, SIGKILL after ``grace_s``; raises if it survives that."""
        if not self.alive():
            return
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            self._signal(sig)
            deadline = time.monotonic() + wait_s
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self.alive():
                while not _exited(self.pid) and time.monotonic() < deadline:
                    time.sleep(0.01)  # signalled and on its way out: wait until it has ended
                return
        raise ProcessError(f"{self.name} (pid {self.pid}) survived SIGKILL")

    def send_signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to its process group (fault injection: SIGKILL, SIGSTOP, SIGCONT)."""
        self._signal(sig)

    def kill(self) -> None:
        """SIGKILL, no grace: a crash. Returns once it is gone."""
        self._signal(signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.alive():
            raise ProcessError(f"{self.name} (pid {self.pid}) survived SIGKILL")

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(self.pid) == self.pid:  # our process-group leader, not a reused pid
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)

    def to_json(self) -> dict[str, str | int]:
        return {"name": self.name, "binary": self.binary, "log": str(self.log), "pid": self.pid}

    @classmethod
    def from_json(cls, d: dict[str, str | int]) -> Proc:
        return cls(str(d["name"]), str(d["binary"]), Path(str(d["log"])), int(d["pid"]))


class Group:
    """Processes logged under ``log_dir`` (``<name>.log``; ``append``: a restarted name keeps
    its earlier log) and stopped together, newest first, also when a start-up fails half-way."""

    def __init__(self, log_dir: Path, *, append: bool = False) -> None:
        self.log_dir = log_dir
        self.append = append
        self.procs: list[Proc] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        log = self.log_dir / f"{name}.log"
        proc = Proc.spawn(name, argv, log, env=env, cwd=cwd, append=self.append)
        self.procs.append(proc)
        return proc

    def unique_name(self, base: str) -> str:
        """``base-0``, ``base-1``, ...: the first not taken in this group."""
        taken = {p.name for p in self.procs}
        n = 0
        while f"{base}-{n}" in taken:
            n += 1
        return f"{base}-{n}"

    def stop(self) -> None:
        """Stop every process (newest first), then raise if one would not stop."""
        errors = []
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except ProcessError as e:
                errors.append(str(e))
        self.procs.clear()
        if errors:
            raise ProcessError("; ".join(errors))

    def __enter__(self) -> Self:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
