"""The demo's timeline: homogeneous baseline, then PrfaaS under the operator, a mid-run event,
a summary; everything it started is stopped on the way out (also on Ctrl-C or an error)."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.live import Live

from prfaas.api import PDCluster, PrefillPool
from prfaas.serving.http import JSON
from prfaas_dev.demo.kube import crds_yaml, custom_api
from prfaas_dev.demo.kubelet import (
    GROUP as EG_GROUP,
)
from prfaas_dev.demo.kubelet import (
    PLURAL as EG_PLURAL,
)
from prfaas_dev.demo.kubelet import (
    Binding,
    EngineSet,
    Kubelet,
    Slot,
    engine_group,
)
from prfaas_dev.demo.load import LoadGen, Traffic, Window, window
from prfaas_dev.demo.scenario import NAMESPACE, demo_resources, prometheus_workload
from prfaas_dev.demo.view import Snapshot, render, summary_table
from prfaas_dev.demo.watch import LinkMeter, Watcher, http_text, metric_sum
from prfaas_dev.http import http_ok
from prfaas_dev.kubectl import kubectl
from prfaas_dev.ports import free_port
from prfaas_dev.procs import Group, Proc, prfaas_argv

HOST = "127.0.0.1"
SHIFT_MU = 10.3  # prompts ~1.5x longer: the planner moves t and the split (see README)


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and why."""


@dataclass
class Options:
    speedup: float = 10.0
    rate: float = 2.4  # nominal req/s: above homogeneous capacity, below PrfaaS's
    baseline_s: float = 40.0  # wall seconds
    prfaas_s: float = 60.0
    after_s: float = 40.0
    event: str = "shift"  # shift | link-drop | none
    baseline: bool = True
    kubeconfig: Path | None = None  # an existing cluster instead of two local API servers
    out: Path = Path(".local/demo")
    kv_byte_scale: float = 2e-4
    emit_interval: float = 0.2
    warmup: float = 0.3  # share of each phase left out of its measurement
    slo_s: float = 10.0  # TTFT SLO of the case study's PDCluster


@dataclass
class Result:
    name: str
    window: Window
    link_gbps: float | None = None


@dataclass
class Timeline:
    events: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    def add(self, msg: str) -> None:
        self.events.append(f"{time.monotonic() - self.t0:6.0f} s  {msg}")


def _router_argv(port: int, args: list[str], speedup: float) -> list[str]:
    """``prfaas router``; ``--speedup``: its phase bounds follow the time-scaled engines."""
    return [
        *prfaas_argv(),
        "router",
        "--host",
        HOST,
        "--port",
        str(port),
        "--model",
        "sim-model",
        "--scrape-interval",
        "0.5",
        "--speedup",
        f"{speedup:g}",
        "--log-format",
        "plain",
        *args,
    ]


class Demo:
    def __init__(self, opts: Options, console: Console) -> None:
        self.o = opts
        self.console = console
        self.timeline = Timeline()
        self.results: list[Result] = []
        self.log_dir = opts.out / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.engine_args = [
            "--speedup",
            f"{opts.speedup:g}",
            "--kv-byte-scale",
            f"{opts.kv_byte_scale:g}",
            "--emit-interval",
            f"{opts.emit_interval:g}",
        ]

    def say(self, msg: str) -> None:
        self.console.print(f"[bold]==>[/bold] {msg}")

    def epilogue(self) -> list[str]:
        """Lines for the end of the run (what is still running, and how to look at it)."""
        return []

    # -- phases ------------------------------------------------------------------------------
    def run(self) -> list[Result]:
        with contextlib.ExitStack() as stack:
            if self.o.baseline:
                self.baseline(stack)
            self.prfaas(stack)
        return self.results

    def _drive(
        self,
        name: str,
        router: str,
        seconds: float,
        sample: Callable[[Snapshot], None],
        events: dict[float, Callable[[LoadGen], None]] | None = None,
    ) -> tuple[LoadGen, float, float]:
        """Offer the load for ``seconds`` with the live view; returns (load, start, end)."""
        load = LoadGen(router, Traffic(self.o.rate), self.o.speedup)
        start = time.monotonic()
        load.start()
        pending = sorted((events or {}).items())
        try:
            with Live(console=self.console, refresh_per_second=2, transient=False) as live:
                while (now := time.monotonic()) < start + seconds:
                    while pending and now - start >= pending[0][0]:
                        pending.pop(0)[1](load)
                    snap = Snapshot(
                        name, now - start, self.o.speedup, self.o.rate, inflight=load.inflight
                    )
                    recs = list(load.records)
                    snap.recent = window(
                        recs, max(start, now - 20), now, self.o.speedup, self.o.slo_s
                    )
                    sample(snap)
                    snap.events = self.timeline.events
                    live.update(render(snap))
                    time.sleep(0.5)
        finally:
            load.stop()
        return load, start, start + seconds

    def baseline(self, stack: contextlib.ExitStack) -> None:
        from prfaas.model.planner import plan
        from prfaas.model.scenario import case_study

        homo = plan(case_study()).homogeneous
        n_p, n_d = homo.n_prefill, homo.n_decode
        self.say(
            f"baseline: homogeneous PD, {n_p} prefill + {n_d} decode H20 engines "
            f"(the planner's best split of {n_p + n_d}), no PrefillPool"
        )
        group = Group(self.log_dir, append=True)
        try:
            pre = [self._engine(group, f"homo-prefill-{k}", "prefill", "h20") for k in range(n_p)]
            dec = [self._engine(group, f"homo-decode-{k}", "decode", "h20") for k in range(n_d)]
            policy = self.o.out / "homogeneous-policy.json"
            policy.write_text(
                json.dumps(
                    {
                        "version": 1,
                        "thresholdTokens": None,
                        "prefillEndpoints": pre,
                        "decodeEndpoints": dec,
                    }
                )
            )
            router = self._router(group, ["--policy-file", str(policy)], "homo-router")

            def sample(s: Snapshot) -> None:
                s.n_prefill, s.n_decode, s.n_pool = str(n_p), str(n_d), "0"

            load, start, end = self._drive(
                "1/2 homogeneous PD baseline", router, self.o.baseline_s, sample
            )
            w = window(
                list(load.records),
                start + self.o.warmup * (end - start),
                end,
                self.o.speedup,
                self.o.slo_s,
            )
            self.results.append(Result("homogeneous PD", w, None))
            self.timeline.add(
                f"baseline: {w.throughput:.2f} req/s served, P90 TTFT {w.ttft_p90:.1f} s"
            )
        finally:
            group.stop()

    def _engine(self, group: Group, name: str, role: str, profile: str) -> str:
        port = free_port()
        argv = [
            *prfaas_argv(),
            "engine",
            "--role",
            role,
            "--profile",
            profile,
            "--port",
            str(port),
            "--kv-port",
            str(free_port()),
            *self.engine_args,
        ]
        url = f"http://{HOST}:{port}"
        group.start(name, argv).wait_ready(lambda: http_ok(url + "/health"), 30)
        return url

    def _router(self, group: Group, args: list[str], name: str) -> str:
        port = free_port()
        argv = _router_argv(port, args, self.o.speedup)
        url = f"http://{HOST}:{port}"
        group.start(name, argv).wait_ready(lambda: http_ok(url + "/readyz"), 60)
        return url

    # -- PrfaaS under the operator -----------------------------------------------------------
    def prfaas(self, stack: contextlib.ExitStack) -> None:
        west, east = self._clusters(stack)
        group = Group(self.log_dir, append=True)
        stack.callback(group.stop)
        self.say("installing CRDs, the case-study PrefillPool and PDCluster (time-scaled)")
        for cluster in dict.fromkeys((west, east)):
            kubectl(cluster, "apply", "--server-side", "-f", "-", stdin=crds_yaml())
            kubectl(
                cluster,
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                f"crd/{PDCluster.resource.name}",
                f"crd/{PrefillPool.resource.name}",
                f"crd/{EG_PLURAL}.{EG_GROUP}",
            )
            ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
            kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump(ns))

        pool_n, pd_n = 4, 7
        links = [(free_port(), free_port()) for _ in range(pool_n)]  # (link port, engine KV port)

        def engines(name: str, role: str, profile: str, slots: list[Slot]) -> EngineSet:
            return EngineSet(name, role, profile, slots, group, self.engine_args)

        pool = engines(
            "h200-prefill",
            "prefill",
            "h200",
            [Slot(free_port(), kv, (HOST, lp)) for lp, kv in links],
        )
        pre = engines(
            "h20-prefill",
            "prefill",
            "h20",
            [Slot(free_port(), free_port()) for _ in range(pd_n)],
        )
        dec = engines(
            "h20-decode",
            "decode",
            "h20",
            [Slot(free_port(), free_port()) for _ in range(pd_n)],
        )
        stack.callback(pool.stop)
        stack.callback(pre.stop)
        stack.callback(dec.stop)

        self.say("starting the 100 Gbps link (shaped), Prometheus, operator, router")
        link_admin = free_port()
        link_argv = [
            *prfaas_argv(),
            "link",
            "--host",
            HOST,
            "--admin-port",
            str(link_admin),
            "--gbps",
            "100",
            "--rtt-ms",
            "20",
            "--speedup",
            f"{self.o.speedup:g}",
            "--kv-byte-scale",
            f"{self.o.kv_byte_scale:g}",
            "--name",
            "dc-east-west",
        ]
        for lp, kv in links:
            link_argv += ["--route", f"{lp}={HOST}:{kv}"]
        link_url = f"http://{HOST}:{link_admin}"
        group.start("link", link_argv).wait_ready(lambda: http_ok(link_url + "/health"))

        secret = "dc-east-kubeconfig"
        kubectl(
            west,
            "-n",
            NAMESPACE,
            "create",
            "secret",
            "generic",
            secret,
            f"--from-file=kubeconfig={east}",
            check=False,
        )
        groups = [(east, "h200-prefill", 4), (west, "h20-prefill", 4), (west, "h20-decode", 4)]
        for kc, name, n in groups:
            kubectl(kc, "apply", "-f", "-", stdin=yaml.safe_dump(engine_group(name, NAMESPACE, n)))
        pd, pp = demo_resources(self.o.speedup, pool.urls(), pre.urls(), dec.urls(), secret, 4)
        router_port = free_port()
        prom = self._prometheus(stack, router_port, pre, dec)
        kubectl(west, "apply", "-f", "-", stdin=yaml.safe_dump_all([pp, pd]))
        if self.o.kubeconfig is not None:  # someone's cluster: take our objects away again
            stack.callback(self._clean_up, west, secret)
        kubelet = Kubelet(
            [
                Binding(custom_api(east), NAMESPACE, "h200-prefill", pool),
                Binding(custom_api(west), NAMESPACE, "h20-prefill", pre),
                Binding(custom_api(west), NAMESPACE, "h20-decode", dec),
            ]
        )
        kubelet.step()
        self._operator(group, west, prom)
        router = f"http://{HOST}:{router_port}"
        r_argv = _router_argv(
            router_port,
            ["--pdcluster", "h20-pd", "-n", NAMESPACE, "--kubeconfig", str(west)],
            self.o.speedup,
        )
        r_proc = group.start("router", r_argv)
        self.timeline.add("operator planning from the declared case-study workload")
        deadline = time.monotonic() + 90
        while not http_ok(router + "/readyz"):
            kubelet.step()
            if time.monotonic() > deadline or not r_proc.alive():
                raise DemoError(f"the router got no routing policy in 90 s:\n{r_proc.tail()}")
            time.sleep(0.5)
        self.timeline.add("router running the operator's policy")
        self._live_phase(west, kubelet, router, link_url, prom)

    def _clean_up(self, kubeconfig: Path, secret: str) -> None:
        """Delete the demo's objects while the operator still runs (its finalizer removes the
        member-cluster policy ConfigMap); CRDs and the namespace stay."""
        self.say(f"deleting the demo's objects from namespace {NAMESPACE} (CRDs stay)")
        for kind in (
            "pdcluster/h20-pd",
            "prefillpool/h200-pool",
            "enginegroups --all",
            f"secret/{secret}",
        ):
            kubectl(
                kubeconfig,
                "-n",
                NAMESPACE,
                "delete",
                *kind.split(),
                "--wait=true",
                "--timeout=60s",
                "--ignore-not-found",
                check=False,
            )

    def _clusters(self, stack: contextlib.ExitStack) -> tuple[Path, Path]:
        if self.o.kubeconfig is not None:
            self.say(f"using the cluster of {self.o.kubeconfig} for both datacenters")
            return self.o.kubeconfig, self.o.kubeconfig
        from prfaas_dev.cluster import ControlPlane, DevClusterError

        paths = []
        for dc in ("dc-west", "dc-east"):
            self.say(f"starting a local API server for {dc} (etcd + kube-apiserver)")
            plane = ControlPlane(state_dir=self.o.out / dc)
            try:
                plane.start()
            except DevClusterError as exc:
                raise DemoError(f"{dc}: {exc}") from None
            stack.callback(plane.stop)
            paths.append(Path(plane.kubeconfig))
        return paths[0], paths[1]

    def _prometheus(
        self, stack: contextlib.ExitStack, router_port: int, pre: EngineSet, dec: EngineSet
    ) -> str:
        from prfaas_dev.prometheus import LocalPrometheus, PrometheusError

        def hosts(es: EngineSet) -> list[str]:
            return [f"{HOST}:{s.port}" for s in es.slots]

        prom = LocalPrometheus(
            {"router": [f"{HOST}:{router_port}"], "prefill": hosts(pre), "decode": hosts(dec)},
            labels={"prefill": {"role": "prefill"}, "decode": {"role": "decode"}},
        )
        try:
            prom.start()
        except PrometheusError as exc:
            raise DemoError(f"Prometheus: {exc} (install it: make deps)") from None
        stack.callback(prom.stop)
        return prom.url

    def _operator(self, group: Group, kubeconfig: Path, prometheus_url: str) -> Proc:
        argv = [
            *prfaas_argv(),
            "operator",
            "-n",
            NAMESPACE,
            "--allow-prometheus",
            prometheus_url,
            "--log-format",
            "plain",
            "--metrics-address",
            HOST,
            "--metrics-port",
            str(free_port()),
            "--liveness",
            f"http://{HOST}:{free_port()}/healthz",
        ]
        return group.start("operator", argv, env={"KUBECONFIG": str(kubeconfig)})

    def _live_phase(
        self, west: Path, kubelet: Kubelet, router: str, link_url: str, prom_url: str
    ) -> None:
        o = self.o
        api = custom_api(west)
        meta = PDCluster.resource
        pdc = (meta.group, meta.version, NAMESPACE, meta.plural, "h20-pd")
        meter = LinkMeter(o.kv_byte_scale * o.speedup)

        def ready() -> dict[str, int]:
            kubelet.step()
            return {b.name: b.ready for b in kubelet.bindings}

        watcher = Watcher(
            lambda: dict(api.get_namespaced_custom_object(*pdc)),
            ready,
            router,
            lambda: metric_sum(http_text(link_url + "/metrics"), "prfaas_link_bytes_total"),
            meter,
            o.speedup,
            self.timeline.add,
        )

        def to_prometheus(_: LoadGen) -> None:
            patch = {"spec": {"workload": {"declared": None, **prometheus_workload(prom_url, 20)}}}
            api.patch_namespaced_custom_object(*pdc, patch)
            self.timeline.add("operator now plans from live traffic (Prometheus, 20 s window)")

        def event(load: LoadGen) -> None:
            if o.event == "shift":
                load.traffic.mu = SHIFT_MU
                self.timeline.add(f"EVENT traffic shift: prompts ~1.5x longer (mu {SHIFT_MU})")
            elif o.event == "link-drop":
                body = json.dumps({"gbps": 10}).encode()
                req = urllib.request.Request(link_url + "/link", body, {"Content-Type": JSON})
                urllib.request.urlopen(req, timeout=5).close()
                meter.capacity = 10.0
                self.timeline.add("EVENT link drop: 100 -> 10 Gbps")

        events: dict[float, Callable[[LoadGen], None]] = {min(15.0, o.prfaas_s / 3): to_prometheus}
        if o.event != "none":
            events[o.prfaas_s] = event
        total = o.prfaas_s + (o.after_s if o.event != "none" else 0)
        load, start, end = self._drive(
            "2/2 PrfaaS-PD under the operator", router, total, watcher.sample, events
        )
        recs = list(load.records)
        a, b = start + o.warmup * o.prfaas_s, start + o.prfaas_s
        self.results.append(
            Result("PrfaaS-PD", window(recs, a, b, o.speedup, o.slo_s), meter.mean(a, b))
        )
        if o.event != "none":
            a2 = b + o.warmup * o.after_s
            w = window(recs, a2, end, o.speedup, o.slo_s)
            self.results.append(Result(f"after {o.event}", w, meter.mean(a2, end)))


def results_json(results: list[Result], opts: Options) -> dict[str, Any]:
    return {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "results": [
            {"setup": r.name, "linkGbps": r.link_gbps, **asdict(r.window)} for r in results
        ],
    }


def summary(console: Console, results: list[Result], timeline: Timeline) -> None:
    base = next((r.window for r in results if r.name.startswith("homogeneous")), None)
    console.print(summary_table([(r.name, r.window, r.link_gbps) for r in results], base))
    console.print("[bold]What happened[/bold]")
    for line in timeline.events:
        console.print(f"  {line}")
