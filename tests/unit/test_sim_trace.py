"""Mooncake trace reading/writing; malformed lines are named with their line number."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from prfaas.sim.arrivals import from_trace
from prfaas.sim.options import SimOptions
from prfaas.sim.trace import TraceError, TraceRow, read_trace, write_trace

GOOD = [
    {"timestamp": 0, "input_length": 1000, "output_length": 10, "hash_ids": [0, 1]},
    {"timestamp": 1500, "input_length": 512, "output_length": 5, "hash_ids": [0]},
    {"timestamp": 3000, "input_length": 1600, "output_length": 7, "hash_ids": [0, 2, 3, 4]},
]


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reads_rows_and_round_trips(tmp_path: Path) -> None:
    path = write(tmp_path, [json.dumps(r) for r in GOOD] + [""])
    rows = read_trace(path)
    assert rows[2] == TraceRow(3000.0, 1600, 7, (0, 2, 3, 4))
    out = io.StringIO()
    assert write_trace(rows, out) == 3
    assert [json.loads(line) for line in out.getvalue().splitlines()] == GOOD


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"input_length": 10}', "'output_length'"),
        ('{"input_length": -5, "output_length": 1}', "'input_length' must be an integer >= 1"),
        ('{"input_length": 1.5, "output_length": 1}', "'input_length'"),
        ('{"timestamp": -1, "input_length": 5, "output_length": 1}', "'timestamp'"),
        ('{"input_length": 1000, "output_length": 1, "hash_ids": [1]}', "needs 2"),
        ('{"input_length": 10, "output_length": 1, "hash_ids": ["a"]}', "list of integers"),
    ],
)
def test_malformed_lines_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, [json.dumps(GOOD[0]), line])
    with pytest.raises(TraceError, match=f"t.jsonl:2: .*{message}"):
        read_trace(path)


def test_order_and_consistency_rules(tmp_path: Path) -> None:
    later, earlier = json.dumps(GOOD[1]), json.dumps(GOOD[0] | {"timestamp": 100})
    with pytest.raises(TraceError, match=":2: timestamps must not decrease"):
        read_trace(write(tmp_path, [later, earlier]))
    untimed = json.dumps({"input_length": 5, "output_length": 1})
    with pytest.raises(TraceError, match=":2: 'timestamp' must be on every line"):
        read_trace(write(tmp_path, [json.dumps(GOOD[0]), untimed]))
    with pytest.raises(TraceError, match="no requests"):
        read_trace(write(tmp_path, [""]))
    with pytest.raises(TraceError, match="cannot read"):
        read_trace(tmp_path / "missing.jsonl")


def test_replay_timing_and_rescaling(tmp_path: Path) -> None:
    path = write(tmp_path, [json.dumps(r) for r in GOOD])
    rng = np.random.default_rng(0)
    reqs = from_trace(SimOptions(arrivals="trace", trace=path), None, rng)
    assert reqs.arrival.tolist() == [0.0, 1.5, 3.0]
    assert reqs.hashes is not None and reqs.hashes[1] == (0,)
    faster = from_trace(SimOptions(arrivals="trace", trace=path), 2.0, rng)  # 2 req/s
    assert faster.arrival.tolist() == pytest.approx([0.0, 0.5, 1.0])
    untimed = write(tmp_path, [json.dumps({"input_length": 5, "output_length": 1})] * 3)
    with pytest.raises(TraceError, match="give a rate"):
        from_trace(SimOptions(arrivals="trace", trace=untimed), None, rng)
