"""Start simulated engines, link shapers and routers (ours and the peers) as real processes on
127.0.0.1, for the peer-interop test and the router benchmarks.

Every process gets a free port, a log file and its own process group; ``Stack`` stops them all
(SIGTERM to the group it started, then SIGKILL) even when a start-up fails half-way.

    with Stack(log_dir) as stack:
        p = stack.engine("prefill", profile="h20", speedup=20)
        d = stack.engine("decode", profile="h20", speedup=20)
        r = stack.sglang_router([p], [d])
        ...  # POST r.url + "/v1/completions"
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from prfaas.demo.procs import prfaas_argv
from prfaas.devprometheus import free_port

HOST = "127.0.0.1"


class StartError(RuntimeError):
    """A process did not come up; the message ends with the tail of its log."""


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: helpers it forks are stopped with it
                env={**os.environ, **(env or {})},
                cwd=cwd,
            )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, grace_s: float = 5.0) -> None:
        p = self.popen
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)  # the group we created for it, by its id
        try:
            p.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


@dataclass(frozen=True)
class Engine:
    role: str
    url: str
    port: int
    kv_port: int
    bootstrap_port: int  # what a router must give decode to pull from (kv_port, or a link route)
    proc: Proc


@dataclass(frozen=True)
class Service:
    name: str
    url: str
    port: int
    metrics_url: str | None
    proc: Proc


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_post_json(url: str, body: Any, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until(proc: Proc, ready: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StartError(f"{proc.name} exited during start-up:\n{proc.tail()}")
        with contextlib.suppress(OSError, ValueError):
            if ready():
                return
        time.sleep(0.1)
    raise StartError(f"{proc.name} not ready after {timeout_s:.0f} s:\n{proc.tail()}")


def scrape(url: str) -> dict[str, float]:
    """Prometheus text at ``url`` as {'name{k="v",...}': value} (labels sorted)."""
    status, body = http_get(url, timeout=5)
    if status != 200:
        raise RuntimeError(f"GET {url}: {status}")
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


@dataclass
class Stack:
    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def __enter__(self) -> Stack:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, argv, self.log_dir / f"{name}.log")
        self.procs.append(proc)
        proc.start(env)
        return proc

    def _name(self, base: str) -> str:
        taken = {p.name for p in self.procs}
        n = 0
        while f"{base}-{n}" in taken:
            n += 1
        return f"{base}-{n}"

    # -- our processes -----------------------------------------------------------------------
    def engine(
        self,
        role: str,
        profile: str = "h20",
        speedup: float = 1.0,
        zero_compute: bool = False,
        kv_port: int | None = None,
        kv_advertise: tuple[str, int] | None = None,
        kv_byte_scale: float | None = None,
        extra: Sequence[str] = (),
    ) -> Engine:
        port, kv = free_port(), kv_port or free_port()
        argv = [*prfaas_argv(), "engine", "--role", role, "--host", HOST, "--port", str(port)]
        argv += ["--kv-port", str(kv), "--profile", profile, "--speedup", f"{speedup:g}"]
        if zero_compute:
            argv.append("--zero-compute")
        if kv_advertise:
            argv += ["--kv-advertise", f"{kv_advertise[0]}:{kv_advertise[1]}"]
        if kv_byte_scale is not None:
            argv += ["--kv-byte-scale", f"{kv_byte_scale:g}"]
        argv += list(extra)
        proc = self._spawn(self._name(f"engine-{role}-{profile}"), argv)
        url = f"http://{HOST}:{port}"
        wait_until(proc, lambda: http_get(url + "/health")[0] == 200, 30)
        boot = kv_advertise[1] if kv_advertise else kv
        return Engine(role, url, port, kv, boot, proc)

    def link(
        self,
        routes: dict[int, tuple[str, int]],
        gbps: float,
        rtt_ms: float,
        speedup: float,
        kv_byte_scale: float | None = None,
    ) -> Service:
        admin = free_port()
        argv = [*prfaas_argv(), "link", "--host", HOST, "--admin-port", str(admin)]
        for listen, (h, p) in routes.items():
            argv += ["--route", f"{listen}={h}:{p}"]
        argv += ["--gbps", f"{gbps:g}", "--rtt-ms", f"{rtt_ms:g}", "--speedup", f"{speedup:g}"]
        if kv_byte_scale is not None:
            argv += ["--kv-byte-scale", f"{kv_byte_scale:g}"]
        proc = self._spawn(self._name("link"), argv)
        url = f"http://{HOST}:{admin}"
        wait_until(proc, lambda: http_get(url + "/health")[0] == 200, 30)
        return Service("link", url, admin, url + "/metrics", proc)

    def prfaas_router(
        self,
        prefills: Sequence[Engine],
        decodes: Sequence[Engine],
        pools: Sequence[tuple[str, Sequence[Engine], float]] = (),
        threshold_tokens: int | None = None,
        extra: Sequence[str] = (),
    ) -> Service:
        """``prfaas router`` on a policy file (``status.routingPolicy``): local PD-P ``prefills``,
        PD-D ``decodes`` and PrefillPools ``(name, engines, link budget Gbps)``."""
        policy = {
            "version": 1,
            "thresholdTokens": threshold_tokens,
            "prefillPools": [
                {"name": n, "endpoints": [e.url for e in es], "linkBudgetGbps": gbps}
                for n, es, gbps in pools
            ],
            "prefillEndpoints": [e.url for e in prefills],
            "decodeEndpoints": [e.url for e in decodes],
        }
        policy_file = self.log_dir / f"{self._name('prfaas-router')}.policy.json"
        policy_file.write_text(json.dumps(policy, indent=2))
        return self.router(["--policy-file", str(policy_file), "--log-format", "plain", *extra])

    def router(
        self, args: Sequence[str], name: str = "prfaas-router", ready_path: str = "/readyz"
    ) -> Service:
        """``prfaas router ARGS`` on a free port, once ``ready_path`` answers 200."""
        port = free_port()
        argv = [*prfaas_argv(), "router", "--host", HOST, "--port", str(port), *args]
        proc = self._spawn(self._name(name), argv)
        url = f"http://{HOST}:{port}"
        wait_until(proc, lambda: http_get(url + ready_path)[0] == 200, 60)
        return Service(name, url, port, url + "/metrics", proc)

    # -- peers -------------------------------------------------------------------------------
    def sglang_router(
        self,
        launcher: Sequence[str],
        prefills: Sequence[Engine],
        decodes: Sequence[Engine],
        policy: str = "round_robin",
        extra: Sequence[str] = (),
    ) -> Service:
        port, prom = free_port(), free_port()
        argv = [*launcher, "--pd-disaggregation"]
        for e in prefills:
            argv += ["--prefill", e.url, str(e.bootstrap_port)]
        for e in decodes:
            argv += ["--decode", e.url]
        argv += ["--policy", policy, "--host", HOST, "--port", str(port)]
        argv += ["--prometheus-host", HOST, "--prometheus-port", str(prom)]
        argv += ["--disable-circuit-breaker", "--log-level", "warn", *extra]
        proc = self._spawn(self._name("sglang-router"), argv)
        url = f"http://{HOST}:{port}"
        total = len(prefills) + len(decodes)

        def ready() -> bool:
            status, body = http_get(url + "/readiness")
            return status == 200 and json.loads(body).get("healthy_workers") == total

        wait_until(proc, ready, 60)
        return Service("sglang-router", url, port, f"http://{HOST}:{prom}/metrics", proc)

    def vllm_router(
        self,
        launcher: Sequence[str],
        prefills: Sequence[Engine],
        decodes: Sequence[Engine],
        policy: str = "round_robin",
        extra: Sequence[str] = (),
    ) -> Service:
        port, prom = free_port(), free_port()
        argv = [*launcher, "--vllm-pd-disaggregation"]
        for e in prefills:
            argv += ["--prefill", e.url]
        for e in decodes:
            argv += ["--decode", e.url]
        argv += ["--policy", policy, "--host", HOST, "--port", str(port)]
        argv += ["--prometheus-host", HOST, "--prometheus-port", str(prom)]
        argv += ["--disable-circuit-breaker", "--worker-startup-check-interval", "1"]
        argv += ["--log-level", "warning", *extra]
        proc = self._spawn(self._name("vllm-router"), argv)
        url = f"http://{HOST}:{port}"

        def ready() -> bool:
            status, body = http_get(url + "/readiness")
            return status == 200 and json.loads(body).get("status") == "ready"

        wait_until(proc, ready, 60)
        return Service("vllm-router", url, port, f"http://{HOST}:{prom}/metrics", proc)
