"""Render the pydantic models as CustomResourceDefinitions with structural OpenAPI schemas.

pydantic's JSON Schema is close to what the API server wants; the differences handled here:
``$ref`` inlined, ``Optional`` (``anyOf [X, null]``) becomes ``X``, ``int | "+Inf"`` becomes
``x-kubernetes-int-or-string``, JSON-Schema-2020 ``exclusiveMinimum: n`` becomes the OpenAPI 3.0
``minimum: n, exclusiveMinimum: true``, and ``title``/``additionalProperties`` are dropped (the
server prunes unknown fields; ``kubectl --validate=strict`` rejects them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from prfaas.api.pdcluster import PDClusterSpec, PDClusterStatus
from prfaas.api.prefillpool import PrefillPoolSpec, PrefillPoolStatus
from prfaas.model.base import Spec

GROUP = "prfaas.io"
VERSION = "v1alpha1"
_DROP = {"title", "additionalProperties"}


@dataclass(frozen=True)
class CRDInfo:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[Spec]
    status: type[Spec]
    columns: tuple[dict[str, Any], ...]


def _condition_column(name: str, ctype: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f".status.conditions[?(@.type=='{ctype}')].status",
    }


CRDS = (
    CRDInfo(
        kind="PrefillPool",
        plural="prefillpools",
        short_names=("pp", "prefillpool"),
        spec=PrefillPoolSpec,
        status=PrefillPoolStatus,
        columns=(
            {"name": "Datacenter", "type": "string", "jsonPath": ".spec.datacenter"},
            {"name": "Accelerator", "type": "string", "jsonPath": ".spec.instance.accelerator"},
            {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
            {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ),
    ),
    CRDInfo(
        kind="PDCluster",
        plural="pdclusters",
        short_names=("pdc",),
        spec=PDClusterSpec,
        status=PDClusterStatus,
        columns=(
            {"name": "Mode", "type": "string", "jsonPath": ".spec.policy.mode"},
            {"name": "Threshold", "type": "integer", "jsonPath": ".status.plan.thresholdTokens"},
            {"name": "Np", "type": "integer", "jsonPath": ".status.plan.nPrefill"},
            {"name": "Nd", "type": "integer", "jsonPath": ".status.plan.nDecode"},
            {"name": "Throughput", "type": "number", "jsonPath": ".status.plan.throughputRps"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            _condition_column("Ready", "Ready") | {"priority": 1},
            {
                "name": "Policy",
                "type": "integer",
                "jsonPath": ".status.routingPolicy.version",
                "priority": 1,
            },
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ),
    ),
)


def _without_nulls(value: Any) -> Any:
    """Defaults are validated against the schema: an absent field, not ``null``."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            return _structural({**options[0], **rest}, defs)
        types = {o.get("type") for o in options}
        if types == {"integer", "string"}:
            either = {k: v for k, v in rest.items() if k not in _DROP}
            either["x-kubernetes-int-or-string"] = True
            return _structural(either, defs)
        raise ValueError(f"cannot render a union of {sorted(map(str, types))} structurally")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "default":
            if value is not None:
                out[key] = _without_nulls(value)
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key == "properties":
            out[key] = {name: _structural(v, defs) for name, v in value.items()}
            continue
        out[key] = _structural(value, defs)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def openapi_schema(model: type[Spec]) -> dict[str, Any]:
    """A model's structural schema (defaults included, so the API server applies them)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _structural(raw, raw.pop("$defs", {}))
    return schema


def crd(info: CRDInfo) -> dict[str, Any]:
    spec_schema = openapi_schema(info.spec)
    status_schema = openapi_schema(info.status)
    description = spec_schema.pop("description", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "prfaas-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.kind.lower(),
                "shortNames": list(info.short_names),
                "categories": ["prfaas"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(info.columns),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description or info.kind,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


HEADER = "# Generated by `prfaas crds` from prfaas.api: do not edit; run `make crds`.\n"


def render(info: CRDInfo) -> str:
    return HEADER + yaml.safe_dump(crd(info), sort_keys=False, allow_unicode=True, width=100)


def filename(info: CRDInfo) -> str:
    return f"{GROUP}_{info.plural}.yaml"
