"""Mooncake trace format (FAST'25 release): one JSON object per line,

``{"timestamp": ms, "input_length": tokens, "output_length": tokens, "hash_ids": [int, ...]}``

``hash_ids`` has one id per 512-token block (the last one possibly partial), chained on the
prefix; it and ``timestamp`` may be absent (then arrivals come from a rate). The same files
drive aiperf/guidellm against the real router, so a simulated run and a real one can share
their input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from prfaas.routing.prefix import BLOCK_TOKENS
from prfaas.sim.options import SimError


class TraceError(SimError):
    """A malformed trace; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class TraceRow:
    timestamp_ms: float | None
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...] | None


def _count(row: dict[str, Any], key: str, where: str, minimum: int) -> int:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TraceError(f"{where}: {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def parse_row(text: str, where: str) -> TraceRow:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise TraceError(f"{where}: expected a JSON object")
    length = _count(row, "input_length", where, 1)
    output = _count(row, "output_length", where, 1)
    stamp = row.get("timestamp")
    if stamp is not None:
        if isinstance(stamp, bool) or not isinstance(stamp, int | float) or stamp < 0:
            raise TraceError(f"{where}: 'timestamp' must be milliseconds >= 0, got {stamp!r}")
        if not math.isfinite(stamp):
            raise TraceError(f"{where}: 'timestamp' must be finite")
    ids = row.get("hash_ids")
    hashes: tuple[int, ...] | None = None
    if ids is not None:
        if not isinstance(ids, list) or not all(
            isinstance(h, int) and not isinstance(h, bool) for h in ids
        ):
            raise TraceError(f"{where}: 'hash_ids' must be a list of integers")
        want = math.ceil(length / BLOCK_TOKENS)
        if len(ids) != want:
            raise TraceError(
                f"{where}: 'hash_ids' has {len(ids)} ids, input_length {length} needs {want} "
                f"(one per {BLOCK_TOKENS}-token block)"
            )
        hashes = tuple(ids)
    return TraceRow(None if stamp is None else float(stamp), length, output, hashes)


def read_trace(path: Path) -> list[TraceRow]:
    try:
        with path.open(encoding="utf-8") as fh:
            return list(_rows(fh, str(path)))
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not UTF-8 text") from None


def _rows(fh: TextIO, name: str) -> Iterator[TraceRow]:
    last = -math.inf
    seen_stamp: bool | None = None
    count = 0
    for number, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        row = parse_row(line, where)
        has = row.timestamp_ms is not None
        if seen_stamp is None:
            seen_stamp = has
        elif has != seen_stamp:
            raise TraceError(f"{where}: 'timestamp' must be on every line or on none")
        if row.timestamp_ms is not None:
            if row.timestamp_ms < last:
                raise TraceError(f"{where}: timestamps must not decrease")
            last = row.timestamp_ms
        count += 1
        yield row
    if count == 0:
        raise TraceError(f"{name}: the trace has no requests")


def write_trace(rows: Iterable[TraceRow], fh: TextIO) -> int:
    n = 0
    for row in rows:
        obj: dict[str, Any] = {}
        if row.timestamp_ms is not None:
            obj["timestamp"] = round(row.timestamp_ms)
        obj["input_length"] = row.input_length
        obj["output_length"] = row.output_length
        if row.hash_ids is not None:
            obj["hash_ids"] = list(row.hash_ids)
        fh.write(json.dumps(obj, separators=(", ", ": ")) + "\n")
        n += 1
    return n
