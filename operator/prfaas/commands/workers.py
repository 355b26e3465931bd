"""``prfaas router --workers N``: N router processes on one port, so one pod uses its cores.

The parent starts N copies of its own command line with ``--worker`` added; each binds the port
with ``SO_REUSEPORT`` (the kernel spreads connections over them) and is a whole router: its own
policy watch, engine scrapes and routing state. The link's load still holds across them, as
across replicas, because each reads it from the pool side (``prfaas.router.linkload``).

Metrics: prometheus_client's multiprocess mode (a directory of per-process files under the
parent's temporary directory), so ``/metrics`` on any worker shows the pod's totals: counters
and histograms summed, each gauge by its declared ``multiprocess_mode`` (in-flight counts
summed, health the minimum, utilisations the maximum).

A worker that exits ends the pod's router (the others are stopped, its exit code returned):
the pod restarts whole, as Kubernetes expects, rather than running short of a worker.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("prfaas.router")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def supervise(n: int, argv: Sequence[str]) -> int:
    """Run ``n`` workers of the command ``argv`` (this process's arguments) until a signal
    stops them or one of them exits; returns the exit code."""
    metrics_dir = tempfile.mkdtemp(prefix="prfaas-router-metrics-")
    env = {**os.environ, MULTIPROC_ENV: metrics_dir}
    cmd = [sys.executable, "-m", "prfaas.cli", *argv, "--worker"]
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, _: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM if signum != signal.SIGINT else signal.SIGINT)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        procs.extend(subprocess.Popen(cmd, env=env) for _ in range(n))
        code = _first_exit(procs)
        if not stopping:
            log.error("a router worker exited (code %s): stopping the others", code)
            stop(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return 0 if stopping and code in (0, -signal.SIGTERM, -signal.SIGINT) else (code or 1)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _first_exit(procs: Sequence[subprocess.Popen[bytes]]) -> int:
    """Wait until one worker exits; its exit code (negative: the signal that ended it)."""
    pids = {p.pid: p for p in procs}
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:  # none left
            return 0
        except InterruptedError:
            continue
        if pid in pids:
            pids[pid].returncode = os.waitstatus_to_exitcode(status)
            return pids[pid].returncode
