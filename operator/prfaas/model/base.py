"""Base class of every profile and CRD field block: camelCase on the wire, unknown keys refused."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Spec(BaseModel):
    """Strict, camelCase-aliased model (the Kubernetes convention), accepting snake_case too."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,  # field docstrings become CRD descriptions
    )


def cel(*rules: tuple[str, str]) -> ConfigDict:
    """CEL rules the API server enforces (``x-kubernetes-validations``); pydantic mirrors them."""
    extra: dict[str, Any] = {
        "x-kubernetes-validations": [{"rule": rule, "message": msg} for rule, msg in rules]
    }
    return ConfigDict(json_schema_extra=extra)
