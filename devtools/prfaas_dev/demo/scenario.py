"""The demo's resources: the case-study samples, time-scaled, with local endpoints.

Every duration in the profiles is divided by ``speedup`` and every link capacity multiplied
by it, so the operator plans for the engines that really run (their throughput is ``speedup``
times the paper's) and finds the same threshold and split as for the paper's hardware.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from prfaas_dev.demo.kubelet import GROUP, KIND, VERSION

NAMESPACE = "prfaas-demo"


def load_samples() -> tuple[dict[str, Any], dict[str, Any]]:
    """(PDCluster, PrefillPool) of the case study, from the package's embedded copy."""
    from importlib import resources

    base = resources.files("prfaas_dev.demo").joinpath("samples")
    pd = yaml.safe_load(base.joinpath("pdcluster-h20.yaml").read_text(encoding="utf-8"))
    pool = yaml.safe_load(base.joinpath("prefillpool-h200.yaml").read_text(encoding="utf-8"))
    return pd, pool


def _scale_instance(inst: dict[str, Any], speedup: float) -> None:
    for point in inst["prefill"]["table"]:
        point["seconds"] = point["seconds"] / speedup
    if "decode" in inst:
        inst["decode"]["stepSeconds"] = inst["decode"]["stepSeconds"] / speedup


def time_scaled(speedup: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """(PDCluster, PrefillPool) of the case study in ``NAMESPACE``, ``speedup`` times faster:
    profiles, link and egress capacities, SLO; polling fast (3 s passes, 6 s cooldown)."""
    pd, pool = (copy.deepcopy(x) for x in load_samples())
    for obj in (pd, pool):
        obj["metadata"]["namespace"] = NAMESPACE
    _scale_instance(pd["spec"]["instance"], speedup)
    _scale_instance(pool["spec"]["instance"], speedup)
    s = pd["spec"]
    for link in s["prefillPools"]:
        link["link"]["capacityGbps"] = link["link"]["capacityGbps"] * speedup
    s["policy"].update(mode="Enforce", intervalSeconds=3, cooldownSeconds=6, maxStep=1)
    if "slo" in s and s["slo"].get("ttftSeconds"):
        s["slo"]["ttftSeconds"] = s["slo"]["ttftSeconds"] / speedup
    p = pool["spec"]
    p["egress"]["capacityGbps"] = p["egress"]["capacityGbps"] * speedup
    return pd, pool


def demo_resources(
    speedup: float,
    pool_urls: list[str],
    prefill_urls: list[str],
    decode_urls: list[str],
    member_secret: str,
    pool_initial: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    pd, pool = time_scaled(speedup)
    target = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND}
    s = pd["spec"]
    s["prefill"]["scaleTargetRef"] = {**target, "name": "h20-prefill"}
    s["decode"]["scaleTargetRef"] = {**target, "name": "h20-decode"}
    s["prefill"]["endpoints"] = {"urls": prefill_urls}
    s["decode"]["endpoints"] = {"urls": decode_urls}
    s["prefill"]["replicas"] = {"min": 1, "max": len(prefill_urls)}
    s["decode"]["replicas"] = {"min": 1, "max": len(decode_urls)}
    p = pool["spec"]
    p["scaleTargetRef"] = {**target, "name": "h200-prefill"}
    p["endpoints"] = {"urls": pool_urls}
    p["replicas"] = {"min": 1, "max": max(len(pool_urls), pool_initial)}
    p["placement"] = {"kubeconfigSecretRef": {"name": member_secret, "key": "kubeconfig"}}
    return pd, pool


def prometheus_workload(url: str, window_s: int) -> dict[str, Any]:
    return {"prometheus": {"url": url, "window": f"{window_s}s", "minRequests": 20}}
