"""`prfaas demo` end to end, short: two API servers, operator, Prometheus, router, engines,
link, traffic; it must serve without failures and leave nothing running."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

# the demo's engines carry these arguments and nothing else does
DEMO_ENGINE_ARGS = "--kv-byte-scale 0.0002 --emit-interval 0.2"


def _demo_engines() -> list[str]:
    out = subprocess.run(["pgrep", "-f", DEMO_ENGINE_ARGS], capture_output=True, text=True)
    return out.stdout.split()


def test_demo_runs_the_whole_system_and_cleans_up(tmp_path: Path) -> None:
    assert not _demo_engines(), "demo engines left over from something else"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "prfaas.cli",
            "demo",
            "--no-baseline",
            "--prfaas-seconds",
            "25",
            "--event",
            "none",
            "-y",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    (ours,) = [r for r in summary["results"] if r["setup"] == "PrfaaS-PD"]
    assert ours["completed"] > 0 and ours["failed"] == 0
    assert 0.2 < ours["offload"] < 0.8  # long prompts went to the pool, short ones stayed
    assert "policy v1: t = 19400, planned PD-P/PD-D 3/5" in proc.stdout
    # the slow loop then read the router's metrics back through Prometheus
    assert "operator signals: Prometheus" in proc.stdout
    assert not _demo_engines(), "the demo left engines running"
