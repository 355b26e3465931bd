"""``prfaas simulate``: output shapes, plots, traces and one-line errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prfaas.cli import main

REQUIRED = {
    "completed",
    "dropped",
    "throughput_rps",
    "ttft_mean_s",
    "ttft_p90_s",
    "ttft_p99_s",
    "egress_gbps_mean",
}


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["simulate", "--no-progress", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_the_documented_shape(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--requests", "300", "--output", "json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert set(doc["policies"]) == {"homogeneous", "naive", "prfaas_static", "prfaas"}
    for s in doc["policies"].values():
        assert set(s) >= REQUIRED
        assert s["completed"] == 300 and s["dropped"] == 0
        assert len(s["series"]["egress_gbps"]) > 0
    assert doc["run"]["requests"] == 300


def test_table_plot_and_trace_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png, trace = tmp_path / "sim.png", tmp_path / "reqs.jsonl"
    args = ["--requests", "300", "--plot", str(png), "--write-trace", str(trace)]
    code, out, err = run([*args, "--link-schedule", "20:10,60:100"], capsys)
    assert code == 0
    assert "TTFT P90" in out and "prfaas_static" in out and "P90 TTFT prfaas vs homogeneous" in out
    assert png.stat().st_size > 10_000 and f"wrote {png}" in err
    # the exported requests replay as a trace, with the same arrivals
    code, out, _ = run(["--trace", str(trace), "--output", "json", "--policies", "prfaas"], capsys)
    assert code == 0
    assert json.loads(out)["policies"]["prfaas"]["completed"] == 300


def test_max_rate_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--max-rate", "--requests", "300", "--policies", "homogeneous", "-o", "json"]
    code, out, _ = run(args, capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["slo_p90_ttft_s"] == 20
    assert doc["sustainable"]["homogeneous"]["rate_rps"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policies", "homogeneous,fastest"], "unknown policy 'fastest'"),
        (["--rate", "-1"], "--rate: must be > 0"),
        (["--rate", "fast"], "--rate: not a number"),
        (["--requests", "0"], "--requests: must be >= 1"),
        (["--arrivals", "weibull"], "--arrivals: unknown 'weibull'"),
        (["--burst", "2:60"], "--burst: expected FACTOR:ON:OFF"),
        (["--arrivals", "bursty", "--burst", "5:60:60"], "burst factor 5"),
        (["--link-schedule", "600-10"], "link schedule: expected START_S:GBPS"),
        (["--link-schedule", "600:-10"], "link schedule capacity must be >= 0"),
        (["--hit-rate-pd", "1.5"], "PD hit rate must be within [0, 1]"),
        (["--slo-ttft", "0"], "SLO TTFT must be > 0"),
        (["--trace", "/nonexistent/t.jsonl"], "cannot read"),
        (["--trace", "t.jsonl", "--arrivals", "bursty"], "drop --arrivals bursty"),
        (["--arrivals", "trace"], "needs a trace file"),
        (["--max-rate", "--trace", "/nonexistent/t.jsonl"], "--max-rate: uses generated"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(args, capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and message in err and err.startswith("prfaas simulate: error:")


def test_malformed_trace_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"timestamp": 0, "input_length": 100, "output_length": 5}\n'
        '{"timestamp": 10, "input_length": "long", "output_length": 5}\n',
        encoding="utf-8",
    )
    code, _, err = run(["--trace", str(path)], capsys)
    assert code == 2
    assert f"{path}:2: 'input_length'" in err and err.count("\n") == 1
