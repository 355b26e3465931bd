"""The Dockerfile's install steps, without a Docker engine: wheel only, fresh venv, `prfaas`."""

from __future__ import annotations

import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 65532:65532$", dockerfile, re.M), "the image must run as non-root"
    assert 'ENTRYPOINT ["prfaas"]' in dockerfile
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("prfaas_operator-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    # the wheel carries the package data (the case study) and not the tests
    help_text = subprocess.run(
        [str(env_dir / "bin" / "prfaas"), "--help"], check=True, capture_output=True, text=True
    ).stdout
    assert "plan" in help_text and "operator" in help_text
    out = subprocess.run(
        [str(env_dir / "bin" / "prfaas"), "plan", "-o", "json"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert '"threshold_tokens": 19400' in out
    listing = subprocess.run(
        [str(py), "-m", "zipfile", "-l", str(wheel)], check=True, capture_output=True, text=True
    ).stdout
    assert "prfaas/model/case_study.yaml" in listing
    assert "tests/" not in listing
