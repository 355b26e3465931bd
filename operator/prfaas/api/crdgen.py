"""Render the pydantic models as CustomResourceDefinitions with structural OpenAPI schemas.

pydantic's JSON Schema is close to what the API server wants; the differences handled here:
``$ref`` inlined, ``Optional`` (``anyOf [X, null]``) becomes ``X``, ``int | "+Inf"`` becomes
``x-kubernetes-int-or-string``, JSON-Schema-2020 ``exclusiveMinimum: n`` becomes the OpenAPI 3.0
``minimum: n, exclusiveMinimum: true``, and ``title``/``additionalProperties: false`` are dropped
(the server prunes unknown fields; ``kubectl --validate=strict`` rejects them); a map's
``additionalProperties`` (the schema of its values) stays.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

import yaml

from prfaas.api.pdcluster import PDCluster
from prfaas.api.prefillpool import PrefillPool
from prfaas.api.resource import ResourceMeta
from prfaas.model.base import Spec

_DROP = {"title", "additionalProperties"}


def _model(annotation: Any) -> type[Spec]:
    """``X`` of a field annotated ``X`` or ``X | None``."""
    (model,) = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    assert isinstance(model, type) and issubclass(model, Spec), annotation
    return model


@dataclass(frozen=True)
class CRDInfo:
    """A top-level model (``PDCluster``), seen as what a CRD needs."""

    model: type[PDCluster] | type[PrefillPool]

    @property
    def resource(self) -> ResourceMeta:
        return self.model.resource

    @property
    def kind(self) -> str:
        return self.resource.kind

    @property
    def plural(self) -> str:
        return self.resource.plural

    @property
    def short_names(self) -> tuple[str, ...]:
        return self.resource.short_names

    @property
    def spec(self) -> type[Spec]:
        return _model(self.model.model_fields["spec"].annotation)

    @property
    def status(self) -> type[Spec]:
        return _model(self.model.model_fields["status"].annotation)


CRDS = (CRDInfo(PrefillPool), CRDInfo(PDCluster))


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
        if key == "additionalProperties" and isinstance(value, dict):
            out[key] = _structural(value, defs)  # a map's values (a model's is ``false``)
            continue
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
    res = info.resource
    spec_schema = openapi_schema(info.spec)
    status_schema = openapi_schema(info.status)
    description = spec_schema.pop("description", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": res.name,
            "labels": {"app.kubernetes.io/part-of": "prfaas-operator"},
        },
        "spec": {
            "group": res.group,
            "scope": "Namespaced",
            "names": {
                "kind": res.kind,
                "listKind": res.list_kind,
                "plural": res.plural,
                "singular": res.singular,
                "shortNames": list(res.short_names),
                "categories": list(res.categories),
            },
            "versions": [
                {
                    "name": res.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.crd() for c in res.columns],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description or res.kind,
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
    return f"{info.resource.group}_{info.plural}.yaml"
