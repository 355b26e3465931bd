"""Simulated engines, link shapers and routers (ours and the peers) as real processes on
127.0.0.1, for the router tests and the router benchmarks.

Every process gets a free port, a log file and its own process group; ``Stack`` stops them all
(SIGTERM to the group it started, then SIGKILL) even when a start-up fails half-way.

    with Stack(log_dir) as stack:
        p = stack.engine("prefill", profile="h20", speedup=20)
        d = stack.engine("decode", profile="h20", speedup=20)
        r = stack.sglang_router(peers.require_sglang_router(), [p], [d])
        ...  # POST r.url + "/v1/completions"
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from prfaas_dev.http import http_get
from prfaas_dev.ports import free_port
from prfaas_dev.procs import Group, Proc, prfaas_argv

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Engine:
    role: str
    url: str
    port: int
    kv_port: int
    bootstrap_port: int  # what a router must give decode to pull from (kv_port, or a link route)
    proc: Proc
    argv: tuple[str, ...] = ()  # to start it again on the same ports (``Stack.restart``)


@dataclass(frozen=True)
class Service:
    name: str
    url: str
    port: int
    metrics_url: str | None
    proc: Proc
    admin_url: str | None = None  # our router's admin port (/policy, /v1/route with URLs)


class Stack(Group):
    """A :class:`~prfaas_dev.procs.Group` that knows how to start engines, links and routers."""

    def _spawn(self, name: str, argv: list[str]) -> Proc:
        return self.start(self.unique_name(name), argv)

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
        port: int | None = None,
    ) -> Engine:
        port, kv = port or free_port(), kv_port or free_port()
        argv = [*prfaas_argv(), "engine", "--role", role, "--host", HOST, "--port", str(port)]
        argv += ["--kv-port", str(kv), "--profile", profile, "--speedup", f"{speedup:g}"]
        if zero_compute:
            argv.append("--zero-compute")
        if kv_advertise:
            argv += ["--kv-advertise", f"{kv_advertise[0]}:{kv_advertise[1]}"]
        if kv_byte_scale is not None:
            argv += ["--kv-byte-scale", f"{kv_byte_scale:g}"]
        argv += list(extra)
        proc = self._spawn(f"engine-{role}-{profile}", argv)
        url = f"http://{HOST}:{port}"
        proc.wait_ready(lambda: http_get(url + "/health")[0] == 200, 30)
        boot = kv_advertise[1] if kv_advertise else kv
        return Engine(role, url, port, kv, boot, proc, tuple(argv))

    def restart(self, engine: Engine, wait: bool = True) -> Engine:
        """``engine`` again, same ports and options, once its process is gone (killed or
        stopped); ``wait``: until it answers ``/health``."""
        proc = self._spawn(f"engine-{engine.role}", list(engine.argv))
        if wait:
            proc.wait_ready(lambda: http_get(engine.url + "/health")[0] == 200, 30)
        return replace(engine, proc=proc)

    def link(
        self,
        routes: dict[int, tuple[str, int]],
        gbps: float,
        rtt_ms: float,
        speedup: float,
        kv_byte_scale: float | None = None,
        gateway: tuple[int, Sequence[str]] | None = None,
    ) -> Service:
        """``prfaas link``; ``gateway``: (its port, the networks it may dial)."""
        admin = free_port()
        argv = [*prfaas_argv(), "link", "--host", HOST, "--admin-port", str(admin)]
        for listen, (h, p) in routes.items():
            argv += ["--route", f"{listen}={h}:{p}"]
        if gateway is not None:
            argv += ["--gateway-port", str(gateway[0])]
            for net in gateway[1]:
                argv += ["--allow", net]
        argv += ["--gbps", f"{gbps:g}", "--rtt-ms", f"{rtt_ms:g}", "--speedup", f"{speedup:g}"]
        if kv_byte_scale is not None:
            argv += ["--kv-byte-scale", f"{kv_byte_scale:g}"]
        proc = self._spawn("link", argv)
        url = f"http://{HOST}:{admin}"
        proc.wait_ready(lambda: http_get(url + "/health")[0] == 200, 30)
        return Service("link", url, admin, url + "/metrics", proc)

    def prfaas_router(
        self,
        prefills: Sequence[Engine],
        decodes: Sequence[Engine],
        pools: Sequence[tuple[str, Sequence[Engine], float]] = (),
        threshold_tokens: int | None = None,
        extra: Sequence[str] = (),
        handoffs: Mapping[str, Mapping[str, object]] | None = None,
    ) -> Service:
        """``prfaas router`` on a policy file (``status.routingPolicy``): local PD-P ``prefills``,
        PD-D ``decodes`` and PrefillPools ``(name, engines, link budget Gbps)``; ``handoffs``:
        a group's P/D protocol (``{"protocol": "sglang", "bootstrapPort": n}``) by pool name,
        ``"local"`` for the local prefill group."""
        policy = router_policy(prefills, decodes, pools, threshold_tokens, handoffs)
        policy_file = self.log_dir / f"{self.unique_name('prfaas-router')}.policy.json"
        policy_file.write_text(json.dumps(policy, indent=2))
        return self.router(["--policy-file", str(policy_file), "--log-format", "plain", *extra])

    def router(
        self, args: Sequence[str], name: str = "prfaas-router", ready_path: str = "/readyz"
    ) -> Service:
        """``prfaas router ARGS`` on a free port, with its admin port on another, once
        ``ready_path`` answers 200."""
        port, admin = free_port(), free_port()
        argv = [*prfaas_argv(), "router", "--host", HOST, "--port", str(port)]
        argv += ["--admin-port", str(admin), *args]
        proc = self._spawn(name, argv)
        url = f"http://{HOST}:{port}"
        proc.wait_ready(lambda: http_get(url + ready_path)[0] == 200, 60)
        return Service(name, url, port, url + "/metrics", proc, f"http://{HOST}:{admin}")

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
        proc = self._spawn("sglang-router", argv)
        url = f"http://{HOST}:{port}"
        total = len(prefills) + len(decodes)

        def ready() -> bool:
            status, body = http_get(url + "/readiness")
            return status == 200 and json.loads(body).get("healthy_workers") == total

        proc.wait_ready(ready, 60)
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
        proc = self._spawn("vllm-router", argv)
        url = f"http://{HOST}:{port}"

        def ready() -> bool:
            status, body = http_get(url + "/readiness")
            return status == 200 and json.loads(body).get("status") == "ready"

        proc.wait_ready(ready, 60)
        return Service("vllm-router", url, port, f"http://{HOST}:{prom}/metrics", proc)


def router_policy(
    prefills: Sequence[Engine],
    decodes: Sequence[Engine],
    pools: Sequence[tuple[str, Sequence[Engine], float]] = (),
    threshold_tokens: int | None = None,
    handoffs: Mapping[str, Mapping[str, object]] | None = None,
) -> dict[str, object]:
    """A ``status.routingPolicy`` for these engines (see ``Stack.prfaas_router``)."""
    handoffs = handoffs or {}
    routes: list[dict[str, object]] = []
    for name, engines, gbps in pools:
        route: dict[str, object] = {"name": name, "endpoints": [e.url for e in engines]}
        route["linkBudgetGbps"] = gbps
        if name in handoffs:
            route["handoff"] = dict(handoffs[name])
        routes.append(route)
    policy: dict[str, object] = {
        "version": 1,
        "thresholdTokens": threshold_tokens,
        "prefillPools": routes,
        "prefillEndpoints": [e.url for e in prefills],
        "decodeEndpoints": [e.url for e in decodes],
    }
    if "local" in handoffs:
        policy["prefillHandoff"] = dict(handoffs["local"])
    return policy
