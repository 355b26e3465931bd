"""A Markdown field reference of the CRDs, generated from the same schemas as ``crds/``."""

from __future__ import annotations

from typing import Any

from prfaas.api.crdgen import CRDS, CRDInfo, openapi_schema
from prfaas.api.resource import GROUP, VERSION


def _type(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = str(node.get("type", ""))
    if kind == "array":
        return f"[]{_type(node.get('items', {}))}"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    return kind


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _limits(node: dict[str, Any]) -> str:
    parts = []
    if "minimum" in node:
        parts.append((">" if node.get("exclusiveMinimum") else "≥") + f" {_num(node['minimum'])}")
    if "maximum" in node:
        parts.append(("<" if node.get("exclusiveMaximum") else "≤") + f" {_num(node['maximum'])}")
    if "minItems" in node or "maxItems" in node:
        parts.append(f"{node.get('minItems', 0)}–{node.get('maxItems', '∞')} items")
    if "pattern" in node:
        parts.append(f"pattern `{node['pattern']}`")
    return ", ".join(parts)


def _default(node: dict[str, Any]) -> str:
    if "default" not in node or isinstance(node["default"], dict | list):
        return ""
    return f"`{node['default']}`"


def _doc(node: dict[str, Any]) -> str:
    text = " ".join(str(node.get("description", "")).split())
    return text.replace("|", "\\|").replace("``", "`")


def _rows(node: dict[str, Any], path: str, required: bool, out: list[str]) -> None:
    mark = " (required)" if required else ""
    out.append(
        f"| `{path}`{mark} | {_type(node)} | {_default(node)} | {_limits(node)} | {_doc(node)} |"
    )
    for rule in node.get("x-kubernetes-validations", []):
        out.append(f"| ↳ rule on `{path}` | | | | {rule['message']} |")
    items = node.get("items", {})
    children = node.get("properties") or items.get("properties") or {}
    needed = set(node.get("required") or items.get("required") or [])
    suffix = "[]" if "items" in node else ""
    for name, child in children.items():
        _rows(child, f"{path}{suffix}.{name}", name in needed, out)


def markdown(infos: tuple[CRDInfo, ...] = CRDS) -> str:
    lines = [
        "# CRD reference",
        "",
        f"Generated from `prfaas.api` by `prfaas crds --reference` (group `{GROUP}`, "
        f"version `{VERSION}`); `make crds` rewrites it.",
        "",
    ]
    for info in infos:
        lines += [f"## {info.kind}", "", f"Short names: {', '.join(info.short_names)}.", ""]
        for part, model in (("spec", info.spec), ("status", info.status)):
            lines += ["| field | type | default | limits | description |", "|---|---|---|---|---|"]
            out: list[str] = []
            _rows(openapi_schema(model), part, part == "spec", out)
            lines += [*out, ""]
    return "\n".join(lines)
