"""The Helm chart's static parts: CRD copies, a closed values schema, the dashboard's queries.

What needs the ``helm`` binary or an API server is in tests/integration/test_helm.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "prfaas-operator"
CRDS = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))


def test_there_are_crds_to_copy() -> None:
    assert CRDS == [
        "kopf.dev_peerings.yaml",  # kopf's, for --peering (HA)
        "prfaas.io_pdclusters.yaml",
        "prfaas.io_prefillpools.yaml",
    ]


@pytest.mark.parametrize("copy_dir", ["charts/prfaas-operator/crds", "manifests/crds"])
def test_crd_copies_are_byte_identical(copy_dir: str) -> None:
    copies = ROOT / copy_dir
    assert sorted(p.name for p in copies.glob("*.yaml")) == CRDS, (
        f"{copy_dir}: run `make chart-crds`"
    )
    for name in CRDS:
        assert (copies / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"{copy_dir}/{name} differs from crds/{name}: run `make chart-crds`"
        )


def test_chart_app_version_is_the_image_tag() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == "0.1.0"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"] == {
        "repository": "prfaas-operator",
        "tag": "",
        "pullPolicy": "IfNotPresent",
        "digest": "",
    }


def _open_objects(node: Any, path: str = "") -> list[str]:
    """Schema paths of objects that accept keys nobody declared (or of any type)."""
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            extra = node.get("additionalProperties", True)
            if extra is True or (isinstance(extra, dict) and extra.get("type") in (None, "object")):
                found.append(path or "/")
        for key, child in node.items():
            found += _open_objects(child, f"{path}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            found += _open_objects(child, f"{path}/{i}")
    return found


def test_values_schema_is_closed_everywhere() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    # the one open shape: Kubernetes objects passed through as they are (affinity, env, volumes,
    # security contexts), which the API server validates (tests/integration/test_helm.py)
    assert _open_objects(schema) == ["/$defs/k8sObject"]


def test_the_open_object_finder_finds_open_objects() -> None:
    assert _open_objects({"type": "object", "properties": {"a": {"type": "object"}}}) == [
        "/",
        "/properties/a",
    ]


def _keys(values: dict[str, Any], schema: dict[str, Any], path: str = "") -> list[str]:
    """Keys of values.yaml that the schema does not declare (a default the schema would refuse)."""
    missing: list[str] = []
    defs = schema.get("$defs", {})

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        return resolve(defs[ref.rsplit("/", 1)[1]]) if ref else node

    def walk(value: Any, node: dict[str, Any], where: str) -> None:
        node = resolve(node)
        if isinstance(value, dict) and "properties" in node:
            for key, child in value.items():
                if key not in node["properties"]:
                    missing.append(f"{where}.{key}")
                else:
                    walk(child, node["properties"][key], f"{where}.{key}")

    walk(values, schema, path)
    return missing


def test_every_default_value_is_declared_in_the_schema() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert _keys(values, schema) == []
    assert set(values) == set(schema["properties"])


DASHBOARD = json.loads((CHART / "dashboards" / "prfaas.json").read_text())


def _exprs() -> list[str]:
    return [t["expr"] for p in DASHBOARD["panels"] for t in p["targets"]]


def test_dashboard_has_the_panels_an_operator_needs() -> None:
    exprs = _exprs()
    assert "prfaas_router_threshold_tokens" in exprs
    assert (
        'sum(rate(prfaas_router_requests_total{target="pool"}[1m]))'
        "/sum(rate(prfaas_router_requests_total[1m]))"
    ) in exprs
    assert "prfaas_router_link_utilisation_ratio" in exprs
    assert (
        "histogram_quantile(0.9, sum by (le) (rate(prfaas_router_ttft_seconds_bucket[1m])))"
    ) in exprs
    groups = {m for e in exprs for m in re.findall(r'prfaas_plan_instances\{[^}]*group="(\w+)"', e)}
    assert groups == {"prefill", "decode", "prefillPool"}
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_reads_the_operators_real_metric_names() -> None:
    """Every operator series the dashboard reads (all but prfaas_router_*) is one it exports."""
    from prometheus_client import REGISTRY

    import prfaas.controller.metrics  # noqa: F401  (registers the operator's metrics)

    exported: set[str] = set()
    for family in REGISTRY.collect():
        exported |= {family.name, f"{family.name}_total", f"{family.name}_bucket"}
    used = {m for e in _exprs() for m in re.findall(r"\bprfaas_\w+", e)}
    operator_side = {m for m in used if not m.startswith("prfaas_router_")}
    assert "prfaas_plan_instances" in operator_side
    assert operator_side <= exported, sorted(operator_side - exported)


def test_dashboard_reads_the_routers_real_metric_names() -> None:
    """Every router series the dashboard reads is one ``RouterMetrics`` exports."""
    from prfaas.router.metrics import RouterMetrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    exported = {
        f"{f.name}{s}"
        for f in RouterMetrics().registry.collect()
        for s in suffixes.get(f.type, ("",))
    }
    used = {m for e in _exprs() for m in re.findall(r"\bprfaas_router_\w+", e)}
    assert used, "the dashboard reads no router metric"
    assert used <= exported, sorted(used - exported)


def test_kustomization_lists_files_that_exist() -> None:
    kustomization = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (ROOT / "manifests" / resource).is_file(), resource
    assert {f"crds/{n}" for n in CRDS} <= set(kustomization["resources"])
