"""``prfaas demo --kind``: the PrfaaS phase of the demo on the two kind clusters.

The clusters (``make kind``; brought up here if absent), the project image built from the
Dockerfile and loaded into them, the system deployed as in the kind tests
(``prfaas_dev.kind_deploy``): the chart's operator and router in dc-west with the H20 engines,
the H200 engines in dc-east, the shaped link between. The live panel reads the PDCluster, the
engine pods that are Ready and the link's counter from the clusters; the traffic goes to the
router's NodePort. Everything stays up afterwards for ``kubectl get pods -o wide``; ``make
kind-down`` removes it.

What differs from the embedded demo: no homogeneous baseline (12 H20 instances; the kind H20
group has 8 GPUs) and the operator plans from the declared workload throughout (no Prometheus
runs in the clusters), so the traffic shift moves what the router sees, not the plan.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from prfaas_dev.demo.load import LoadGen, window
from prfaas_dev.demo.run import SHIFT_MU, Demo, DemoError, Result
from prfaas_dev.demo.scenario import NAMESPACE
from prfaas_dev.demo.watch import LinkMeter, Watcher, metric_sum
from prfaas_dev.http import http_ok

GROUPS = ("h200-prefill", "h20-prefill", "h20-decode")


def _ready(pod: Any) -> bool:
    if pod.metadata is None or pod.metadata.deletion_timestamp is not None or pod.status is None:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


class KindReader:
    """The clusters' state through the Kubernetes client (cheaper than kubectl per sample)."""

    def __init__(self, west: Any, east: Any) -> None:
        from kubernetes import client, config

        def api(kubeconfig: Any) -> Any:
            return config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]

        self.core = {"west": client.CoreV1Api(api(west)), "east": client.CoreV1Api(api(east))}

    def ready(self) -> dict[str, int]:
        out = {}
        for group in GROUPS:
            api = self.core["east" if group == "h200-prefill" else "west"]
            pods = api.list_namespaced_pod(
                NAMESPACE, label_selector=f"prfaas.io/engine-group={group}", _request_timeout=5
            )
            out[group] = sum(1 for p in pods.items if _ready(p))
        return out

    def link_bytes(self) -> float | None:
        from prfaas_dev.kind_deploy import LINK, LINK_ADMIN_PORT

        api = self.core["west"]
        try:
            pods = api.list_namespaced_pod(
                NAMESPACE, label_selector=f"prfaas.io/engine-group={LINK}", _request_timeout=5
            )
            name = pods.items[0].metadata.name  # type: ignore[union-attr]
            text = api.connect_get_namespaced_pod_proxy_with_path(
                f"{name}:{LINK_ADMIN_PORT}", NAMESPACE, "metrics", _request_timeout=5
            )
        except Exception:  # the panel shows "-" for a sample it could not read
            return None
        return metric_sum(str(text), "prfaas_link_bytes_total")


class KindDemo(Demo):
    """The demo's PrfaaS phase with every part in the kind clusters."""

    def run(self) -> list[Result]:
        from prfaas_dev import image
        from prfaas_dev.kind import Kind, KindError
        from prfaas_dev.kind_deploy import Options, deploy, wait_rollouts

        o = self.o
        try:
            kind = Kind(say=self.say)
            self.say("the kind clusters dc-west and dc-east (first time: builds, ~30 min)")
            kind.up()
            self.say("the project image from the Dockerfile")
            opts = Options(
                image=image.build(),
                speedup=o.speedup,
                kv_byte_scale=o.kv_byte_scale,
                emit_interval=o.emit_interval,
            )
            system = deploy(kind, opts, say=self.say)
            self.say("waiting for operator, router, link and engines to roll out")
            wait_rollouts(system)
        except (KindError, image.ImageError) as exc:
            raise DemoError(str(exc)) from None
        self.system = system
        deadline = time.monotonic() + 120
        while not http_ok(system.router_url + "/readyz"):
            if time.monotonic() > deadline:
                raise DemoError(f"the router at {system.router_url} got no routing policy")
            time.sleep(1)
        self.timeline.add("router running the operator's policy (planned from the declared load)")
        self._live(system)
        return self.results

    def _live(self, system: Any) -> None:
        o = self.o
        reader = KindReader(system.west, system.east)
        meter = LinkMeter(o.kv_byte_scale * o.speedup)
        watcher = Watcher(
            system.pdcluster,
            reader.ready,
            system.router_url,
            reader.link_bytes,
            meter,
            o.speedup,
            self.timeline.add,
        )

        def event(load: LoadGen) -> None:
            if o.event == "shift":
                load.traffic.mu = SHIFT_MU
                self.timeline.add(f"EVENT traffic shift: prompts ~1.5x longer (mu {SHIFT_MU})")
            elif o.event == "link-drop":
                with contextlib.suppress(Exception):
                    system.link_admin({"gbps": 10})
                    meter.capacity = 10.0
                self.timeline.add("EVENT link drop: 100 -> 10 Gbps")

        events: dict[float, Callable[[LoadGen], None]] = {}
        if o.event != "none":
            events[o.prfaas_s] = event
        total = o.prfaas_s + (o.after_s if o.event != "none" else 0)
        try:
            name = "PrfaaS-PD on kind (dc-west + dc-east)"
            load, start, end = self._drive(name, system.router_url, total, watcher.sample, events)
        finally:
            if o.event == "link-drop":
                with contextlib.suppress(Exception):
                    system.link_admin({"gbps": 100})
        recs = list(load.records)
        a, b = start + o.warmup * o.prfaas_s, start + o.prfaas_s
        self.results.append(
            Result("PrfaaS-PD (kind)", window(recs, a, b, o.speedup, o.slo_s), meter.mean(a, b))
        )
        if o.event != "none":
            a2 = b + o.warmup * o.after_s
            w = window(recs, a2, end, o.speedup, o.slo_s)
            self.results.append(Result(f"after {o.event}", w, meter.mean(a2, end)))

    def epilogue(self) -> list[str]:
        """How to look at what runs (it stays up)."""
        kc = "kubectl --kubeconfig .local/kind-dc-{}.kubeconfig -n prfaas-demo get {} -o wide"
        return [
            "The system keeps running in the kind clusters:",
            "  " + kc.format("east", "pods"),
            "  " + kc.format("west", "pdc,pods"),
            f"  the router: {self.system.router_url}/v1/completions",
            "make kind-down removes the clusters and stops the project's Docker engine.",
        ]
