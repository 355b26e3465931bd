"""KEP-1623 conditions: ``lastTransitionTime`` moves only when ``status`` flips."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from prfaas.api.common import Condition

Status = Literal["True", "False", "Unknown"]


def iso(t: datetime) -> str:
    """RFC 3339 in UTC, seconds precision (what the API server stores)."""
    return t.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def now_iso() -> str:
    return iso(datetime.now(UTC))


def set_condition(
    conditions: Iterable[Condition],
    ctype: str,
    status: Status,
    reason: str,
    message: str,
    generation: int | None,
    now: str | None = None,
) -> list[Condition]:
    """A new list with ``ctype`` set; other conditions are kept as they are, sorted by type."""
    conditions = list(conditions)
    old = condition(conditions, ctype)
    stamp = now or now_iso()
    if old is not None and old.status == status:
        stamp = old.last_transition_time
    entry = Condition(
        type=ctype,
        status=status,
        reason=reason,
        message=message[:32768],
        observed_generation=generation,
        last_transition_time=stamp,
    )
    rest = [c for c in conditions if c.type != ctype]
    return sorted([*rest, entry], key=lambda c: c.type)


def condition(conditions: Iterable[Condition], ctype: str) -> Condition | None:
    return next((c for c in conditions if c.type == ctype), None)


def is_true(conditions: Iterable[Condition], ctype: str) -> bool:
    found = condition(conditions, ctype)
    return found is not None and found.status == "True"


def parse_conditions(raw: Any) -> list[Condition]:
    """Conditions as stored; entries that no longer validate (older writers) are dropped."""
    out = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, Mapping):
            try:
                out.append(Condition.model_validate(item))
            except ValidationError:
                continue
    return out
