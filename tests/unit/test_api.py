"""CRDs: generated from the models, structural, and the samples are the paper's case study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from prfaas.api import PDCluster, PrefillPool
from prfaas.api.crdgen import CRDS, crd, filename, render
from prfaas.api.pdcluster import PDClusterSpec
from prfaas.api.planning import scenario_for
from prfaas.api.prefillpool import PrefillPoolSpec
from prfaas.model.planner import plan
from prfaas.model.scenario import case_study

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "manifests" / "samples"


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((SAMPLES / name).read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("info", CRDS, ids=lambda i: i.kind)
def test_committed_crds_match_the_models(info: Any) -> None:
    committed = (ROOT / "crds" / filename(info)).read_text(encoding="utf-8")
    assert committed == render(info), "crds/ drifted from prfaas.api: run `make crds`"


def test_committed_reference_matches_the_models() -> None:
    from prfaas.api.reference import markdown

    committed = (ROOT / "docs" / "crd-reference.md").read_text(encoding="utf-8")
    assert committed == markdown(), "docs/crd-reference.md drifted: run `make crds`"


def _walk(node: Any, path: str) -> list[str]:
    """Paths of schema nodes that are not structural."""
    problems = []
    if not isinstance(node, dict):
        return problems
    for bad in ("$ref", "anyOf", "oneOf", "allOf", "title"):
        if bad in node:
            problems.append(f"{path}: has {bad}")
    values = node.get("additionalProperties")
    if values is not None:  # a map: its values' schema, never with properties, and bounded
        if not isinstance(values, dict) or "properties" in node or "maxProperties" not in node:
            problems.append(f"{path}: additionalProperties must be a bounded map's values")
        problems += _walk(values, f"{path}{{}}")
    if "type" not in node and not node.get("x-kubernetes-int-or-string"):
        problems.append(f"{path}: no type")
    bounded = "enum" in node or "maxLength" in node or node.get("format") == "date-time"
    if node.get("type") == "string" and not bounded:
        problems.append(f"{path}: unbounded string")
    if node.get("type") == "array" and "maxItems" not in node:
        problems.append(f"{path}: unbounded list")
    for name, child in node.get("properties", {}).items():
        problems += _walk(child, f"{path}.{name}")
    if "items" in node:
        problems += _walk(node["items"], f"{path}[]")
    return problems


@pytest.mark.parametrize("info", CRDS, ids=lambda i: i.kind)
def test_schemas_are_structural_and_bounded(info: Any) -> None:
    version = crd(info)["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    assert _walk(schema["properties"]["spec"], "spec") == []
    assert _walk(schema["properties"]["status"], "status") == []
    assert version["subresources"] == {"status": {}}
    assert any(c["name"] == "Age" for c in version["additionalPrinterColumns"])


def test_pdcluster_schema_carries_cel_rules_and_defaults() -> None:
    spec = crd(CRDS[1])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert any("replicas.min" in r for r in rules)
    policy = spec["properties"]["policy"]["properties"]
    assert policy["mode"]["enum"] == ["Observe", "Enforce"]
    assert policy["mode"]["default"] == "Observe"
    assert spec["properties"]["prefillPools"]["x-kubernetes-list-type"] == "map"
    bucket = spec["properties"]["workload"]["properties"]["declared"]["properties"]["inputLength"]
    le = bucket["properties"]["histogram"]["properties"]["buckets"]["items"]["properties"]["le"]
    assert le.get("x-kubernetes-int-or-string") is True


@pytest.mark.parametrize(
    ("model", "name"), [(PDCluster, "pdcluster-h20.yaml"), (PrefillPool, "prefillpool-h200.yaml")]
)
def test_samples_are_of_the_kinds_the_models_declare(
    model: type[PDCluster] | type[PrefillPool], name: str
) -> None:
    doc = sample(name)
    res = model.resource
    assert (doc["apiVersion"], doc["kind"]) == (res.api_version, res.kind)
    body = {k: v for k, v in doc.items() if k != "metadata"}
    obj = model.model_validate(body)
    assert (obj.api_version, obj.kind) == (res.api_version, res.kind)
    with pytest.raises(ValidationError, match=r"1 validation error .*\napiVersion"):
        model.model_validate({**body, "apiVersion": f"{res.group}/v1"})
    assert crd(next(i for i in CRDS if i.model is model))["metadata"]["name"] == res.name


def test_samples_are_the_case_study() -> None:
    pool_doc, pd_doc = sample("prefillpool-h200.yaml"), sample("pdcluster-h20.yaml")
    pool = PrefillPoolSpec.model_validate(pool_doc["spec"])
    pd = PDClusterSpec.model_validate(pd_doc["spec"])
    cs = case_study()
    assert pool.instance == cs.prefill_pool.instance
    assert pd.instance == cs.pd_cluster.instance
    assert pd.model.kv_cache == cs.model.kv_cache
    assert pd.workload.declared is not None
    assert pd.workload.declared.input_length == cs.workload.input_length
    link = pd.prefill_pools[0].link
    assert link.capacity_gbps == cs.link.capacity_gbps
    sc = scenario_for("h20-pd", pd, "h200-pool", pool, 4, link, pd.workload.declared)
    best = plan(sc).prfaas
    assert (best.n_prfaas, best.n_prefill, best.n_decode) == (4, 3, 5)
    assert best.threshold_tokens == 19_400


def test_bounds_narrow_the_planned_split() -> None:
    doc = sample("pdcluster-h20.yaml")["spec"]
    doc["prefill"]["replicas"] = {"min": 4, "max": 6}
    pd = PDClusterSpec.model_validate(doc)
    pool = PrefillPoolSpec.model_validate(sample("prefillpool-h200.yaml")["spec"])
    assert pd.workload.declared is not None
    sc = scenario_for("x", pd, "p", pool, 99, pd.prefill_pools[0].link, pd.workload.declared)
    assert sc.prefill_pool.instances == 8  # clamped to the pool's max
    best = plan(sc).prfaas
    assert 4 <= best.n_prefill <= 6


def test_pool_egress_caps_the_link() -> None:
    pool_doc = sample("prefillpool-h200.yaml")["spec"]
    pool_doc["egress"] = {"capacityGbps": 20, "usableFraction": 0.5}
    pool = PrefillPoolSpec.model_validate(pool_doc)
    pd = PDClusterSpec.model_validate(sample("pdcluster-h20.yaml")["spec"])
    assert pd.workload.declared is not None
    sc = scenario_for("x", pd, "p", pool, 4, pd.prefill_pools[0].link, pd.workload.declared)
    assert sc.link.budget_gbps == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        (("instances",), 2, "must not exceed instances"),
        (("decode", "replicas"), {"min": 3, "max": 2}, "must not exceed max"),
        (("policy", "threshold"), {"mode": "Fixed"}, "required when threshold.mode is Fixed"),
        (("policy", "threshold"), {"mode": "Fixed", "tokens": 200000}, "length range"),
        (("workload",), {}, "exactly one"),
        (("policy", "mode"), "Apply", "mode"),
    ],
)
def test_spec_rules_are_mirrored_in_pydantic(
    path: tuple[str, ...], value: Any, needle: str
) -> None:
    doc = sample("pdcluster-h20.yaml")["spec"]
    doc["prefill"]["replicas"]["min"] = 2
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError, match=needle):
        PDClusterSpec.model_validate(doc)


def test_endpoints_name_their_endpointslices() -> None:
    from prfaas.api.common import Endpoints

    assert Endpoints(urls=["http://a:1"]).label_selector() is None
    assert not Endpoints(urls=["http://a:1"]).discovers
    svc = Endpoints(service="h20-prefill")
    assert svc.discovers and svc.label_selector() == "kubernetes.io/service-name=h20-prefill"
    sel = Endpoints(selector={"tier": "prefill", "app.kubernetes.io/name": "h20"})
    assert sel.label_selector() == "app.kubernetes.io/name=h20,tier=prefill"
    for bad in (
        {"service": "a", "selector": {"x": "y"}},
        {"urls": ["http://a:1"], "service": "a"},
        {"selector": {}},
        {"selector": {"a,b": "c"}},
        {"selector": {"a": "b,c"}},  # values: the pattern refuses separators too
        {"service": "Not_A_Label"},
    ):
        with pytest.raises(ValueError):
            Endpoints.model_validate(bad)
