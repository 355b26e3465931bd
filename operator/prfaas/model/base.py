"""Base class of every profile and CRD field block: camelCase on the wire, unknown keys refused.

Cross-field rules are written once, with :func:`rule`: the CEL text the API server evaluates
(``x-kubernetes-validations`` in the CRD) sits on the Python predicate pydantic runs, so the two
are reviewed together and ``tests/unit/test_cel_rules.py`` evaluates both on the same objects.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

_RULE = "__cel_rule__"
P = TypeVar("P", bound=Callable[..., bool])


@dataclass(frozen=True)
class Rule:
    """One validation rule: its CEL, the message the API server shows, and the same check in
    Python (``holds``). ``detail`` words pydantic's message with the offending values."""

    cel: str
    message: str
    holds: Callable[[Any], bool]
    detail: Callable[[Any], str] | None = None

    def check(self, obj: object) -> None:
        if not self.holds(obj):
            raise ValueError(self.detail(obj) if self.detail else self.message)

    def entry(self) -> dict[str, str]:
        return {"rule": self.cel, "message": self.message}


def rule(cel: str, message: str, detail: Callable[[Any], str] | None = None) -> Callable[[P], P]:
    """Declare the decorated predicate (``self -> bool``) as a rule of its class.

    The CRD lists a class's rules in the order they are written; pydantic checks them in that
    order too, after field validation and before the class's own ``model_validator``\\ s.
    """

    def mark(holds: P) -> P:
        setattr(holds, _RULE, Rule(cel, message, holds, detail))
        return holds

    return mark


@functools.cache
def rules_of(cls: type[BaseModel]) -> tuple[Rule, ...]:
    """A model's rules, inherited ones first, each in the order written."""
    found: list[Rule] = []
    for klass in reversed(cls.__mro__):
        found += [r for f in vars(klass).values() if isinstance(r := getattr(f, _RULE, None), Rule)]
    return tuple(found)


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

    @model_validator(mode="after")
    def _rules_hold(self) -> Self:
        for r in rules_of(type(self)):
            r.check(self)
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        found = rules_of(cls)
        if found:
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = [r.entry() for r in found]
        return schema
