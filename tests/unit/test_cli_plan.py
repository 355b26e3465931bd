"""``prfaas plan``: output shapes, plots, and one-line errors (exit 2) for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from prfaas.cli import main
from prfaas.model.scenario import case_study, case_study_text


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, data: Any, name: str = "s.yaml") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def test_json_has_the_documented_shape(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["plan", "--output", "json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert set(doc["plans"]) == {"prfaas", "homogeneous", "naive"}
    required = {
        "throughput_rps",
        "threshold_tokens",
        "offload_fraction",
        "n_prfaas",
        "n_prefill",
        "n_decode",
        "egress_gbps",
        "stages",
    }
    for p in doc["plans"].values():
        assert required <= set(p)
        assert set(p["stages"]) == {"prfaas", "pd_prefill", "pd_decode"}
    assert doc["plans"]["homogeneous"]["threshold_tokens"] is None
    assert doc["plans"]["homogeneous"]["stages"]["prfaas"] is None
    assert doc["plans"]["naive"]["stages"]["pd_prefill"] is None
    assert doc["plans"]["prfaas"]["threshold_tokens"] == 19400


def test_table_names_the_three_configurations(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["plan"], capsys)
    assert code == 0
    for word in ("PrfaaS-PD", "Homogeneous", "Naive", "19.4K", "4/3/5", "—/9/3", "1.54×"):
        assert word in out


def test_show_input_round_trips(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(["plan", "--show-input"], capsys)
    assert code == 0 and out == case_study_text()
    code, out, _ = run(["plan", "-f", write(tmp_path, out), "-o", "json"], capsys)
    assert code == 0
    assert json.loads(out)["plans"]["prfaas"]["n_prefill"] == 3


def test_json_input_is_accepted(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = case_study().model_dump(mode="json", exclude_none=True)
    data["pdCluster"]["instances"] = 10
    code, out, _ = run(
        ["plan", "-f", write(tmp_path, json.dumps(data), "s.json"), "-o", "json"], capsys
    )
    assert code == 0
    prfaas = json.loads(out)["plans"]["prfaas"]
    assert prfaas["n_prefill"] + prfaas["n_decode"] == 10


def test_plot_writes_a_png(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "fig5.png"
    code, _, _ = run(["plan", "--plot", str(target)], capsys)
    assert code == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _edit(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data = case_study().model_dump(mode="json", exclude_none=True)
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


_DELETE = object()
TABLE = ("prefillPool", "instance", "prefill", "table")

BAD = [
    ("unknown key", _edit(("link", "bandwidth"), 5), "link.bandwidth"),
    (
        "negative latency",
        _edit(TABLE, [{"tokens": 1024, "seconds": -0.4}, {"tokens": 8192, "seconds": 0.7}]),
        "seconds",
    ),
    (
        "non-monotone latency",
        _edit(TABLE, [{"tokens": 1024, "seconds": 0.9}, {"tokens": 8192, "seconds": 0.7}]),
        "must not decrease",
    ),
    (
        "unsorted tokens",
        _edit(TABLE, [{"tokens": 8192, "seconds": 0.4}, {"tokens": 1024, "seconds": 0.7}]),
        "strictly increasing",
    ),
    (
        "negative KV",
        _edit(("model", "kvCache", "table"), [{"tokens": 1, "mib": -1}, {"tokens": 2, "mib": 1}]),
        "kvCache",
    ),
    (
        "empty histogram",
        _edit(
            ("workload", "inputLength"),
            {
                "histogram": {
                    "max": 1000,
                    "buckets": [{"le": 500, "count": 0}, {"le": "+Inf", "count": 0}],
                }
            },
        ),
        "empty",
    ),
    ("no distribution", _edit(("workload", "inputLength"), {}), "exactly one"),
    ("link capacity zero", _edit(("link", "capacityGbps"), 0), "link.capacityGbps"),
    ("link too thin", _edit(("link", "capacityGbps"), 0.0001), "cannot carry even one request"),
    ("negative instances", _edit(("prefillPool", "instances"), -1), "prefillPool.instances"),
    ("missing decode", _edit(("pdCluster", "instance", "decode"), _DELETE), "decode"),
    ("min above max", _edit(("workload", "inputLength", "lognormal", "min"), 200000), "min"),
    ("split impossible", _edit(("pdCluster", "minPrefill"), 8), "minPrefill"),
    ("bad convention", _edit(("planner", "serviceTime"), "median"), "serviceTime"),
]


@pytest.mark.parametrize(("name", "data", "needle"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_exits_2_with_one_line(
    name: str,
    data: dict[str, Any],
    needle: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(["plan", "-f", write(tmp_path, data)], capsys)
    assert code == 2, name
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("prfaas plan: error: ")
    assert needle in lines[0]


@pytest.mark.parametrize(
    ("content", "needle"),
    [("link: [unclosed", "not valid YAML"), ("- a list", "mapping"), ("", "mapping")],
)
def test_malformed_files(
    content: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["plan", "-f", write(tmp_path, content)], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_unreadable_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(["plan", "-f", str(tmp_path / "missing.yaml")], capsys)
    assert code == 2 and "cannot read" in err
    code, _, err = run(["plan", "-f", str(tmp_path)], capsys)
    assert code == 2 and "cannot read" in err


def test_unwritable_plot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(["plan", "--plot", str(tmp_path / "no" / "such" / "dir.png")], capsys)
    assert code == 2 and "cannot write" in err


def test_console_script_never_prints_a_traceback(tmp_path: Path) -> None:
    bad = write(tmp_path, {"model": 1})
    proc = subprocess.run(
        [sys.executable, "-m", "prfaas.cli", "plan", "-f", bad],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "model" in proc.stderr
