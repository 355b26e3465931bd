"""KEP-1623 conditions: ``lastTransitionTime`` moves only when ``status`` flips."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def set_condition(
    conditions: list[dict[str, Any]],
    ctype: str,
    status: Status,
    reason: str,
    message: str,
    generation: int | None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """A new list with ``ctype`` set; other conditions are kept as they are."""
    old = condition(conditions, ctype)
    stamp = now or now_iso()
    if old is not None and old.get("status") == status:
        stamp = str(old.get("lastTransitionTime", stamp))
    entry = {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message[:32768],
        "observedGeneration": generation,
        "lastTransitionTime": stamp,
    }
    if generation is None:
        del entry["observedGeneration"]
    rest = [c for c in conditions if c.get("type") != ctype]
    return sorted([*rest, entry], key=lambda c: str(c["type"]))


def condition(conditions: list[dict[str, Any]], ctype: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == ctype), None)
