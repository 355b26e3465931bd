"""`prfaas operator` refuses bad numbers before it starts, with a message, not a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("workers", ["0", "257", "-3"])
def test_workers_out_of_range_is_refused(workers: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "prfaas.cli", "operator", "--workers", workers],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "--workers must be between 1 and 256" in out.stderr
    assert "Traceback" not in out.stderr
