"""The demo's stand-in for kubelet and a workload controller.

The demo's scale targets are ``EngineGroup`` objects (``demo.prfaas.io``, a CRD with a
``/scale`` subresource: no pods anywhere, so it also runs safely on an existing cluster). The
operator patches their ``/scale`` like any Deployment's; this loop keeps as many engine
processes running as ``spec.replicas`` asks (slot ``k`` on fixed ports, so the endpoints the
PDCluster and PrefillPool declare stay valid) and reports the engines that answer ``/health``
as ``status.replicas``, which the operator reads back as the current count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prfaas_dev.http import http_ok
from prfaas_dev.procs import Group, Proc, prfaas_argv


@dataclass
class Slot:
    port: int
    kv_port: int
    kv_advertise: tuple[str, int] | None = None
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class EngineSet:
    """Engines of one role and profile, started and stopped slot by slot."""

    name: str
    role: str
    profile: str
    slots: list[Slot]
    group: Group
    engine_args: list[str] = field(default_factory=list)

    def urls(self) -> list[str]:
        return [s.url for s in self.slots]

    def scale(self, want: int) -> None:
        for k, slot in enumerate(self.slots):
            running = slot.proc is not None and slot.proc.alive()
            if k < want and not running:
                argv = [
                    *prfaas_argv(),
                    "engine",
                    "--role",
                    self.role,
                    "--profile",
                    self.profile,
                    "--port",
                    str(slot.port),
                    "--kv-port",
                    str(slot.kv_port),
                    *self.engine_args,
                ]
                if slot.kv_advertise:
                    argv += ["--kv-advertise", f"{slot.kv_advertise[0]}:{slot.kv_advertise[1]}"]
                slot.proc = self.group.start(f"{self.name}-{k}", argv)
            elif k >= want and running:
                assert slot.proc is not None
                slot.proc.stop()
                slot.proc = None

    def ready(self) -> int:
        return sum(
            1
            for s in self.slots
            if s.proc is not None and s.proc.alive() and http_ok(s.url + "/health", 0.5)
        )

    def stop(self) -> None:
        self.scale(0)


GROUP, VERSION, PLURAL, KIND = "demo.prfaas.io", "v1", "enginegroups", "EngineGroup"


def engine_group_crd() -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {"replicas": {"type": "integer", "minimum": 0}},
            },
            "status": {
                "type": "object",
                "properties": {"replicas": {"type": "integer"}, "selector": {"type": "string"}},
            },
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"plural": PLURAL, "singular": "enginegroup", "kind": KIND},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                }
            ],
        },
    }


def engine_group(name: str, namespace: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas},
    }


@dataclass
class Binding:
    api: Any  # kubernetes.client.CustomObjectsApi of the cluster the group lives in
    namespace: str
    name: str
    engines: EngineSet
    replicas: int = 0  # spec, last seen
    ready: int = 0


class Kubelet:
    def __init__(self, bindings: list[Binding]) -> None:
        self.bindings = bindings

    def step(self) -> None:
        for b in self.bindings:
            obj = b.api.get_namespaced_custom_object(GROUP, VERSION, b.namespace, PLURAL, b.name)
            want = min(int(obj.get("spec", {}).get("replicas") or 0), len(b.engines.slots))
            b.replicas = want
            b.engines.scale(want)
            ready = b.engines.ready()
            if (obj.get("status") or {}).get("replicas") != ready:
                b.api.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    b.namespace,
                    PLURAL,
                    b.name,
                    {"status": {"replicas": ready, "selector": f"app={b.name}"}},
                )
            b.ready = ready

    def stop(self) -> None:
        for b in self.bindings:
            b.engines.stop()
