"""The Dockerfile's install steps, without a Docker engine: wheel only, fresh venv, `prfaas`."""

from __future__ import annotations

import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runtime wheel, built as the Dockerfile's build stage builds it."""
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = wheels.glob("prfaas_operator-*.whl")
    return found


def test_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path, wheel: Path) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 65532:65532$", dockerfile, re.M), "the image must run as non-root"
    assert 'ENTRYPOINT ["prfaas"]' in dockerfile
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
    # a fleet: its linear programs come from a dependency (HiGHS) the wheel must pull in
    fleet = subprocess.run(
        [
            str(env_dir / "bin" / "prfaas"),
            "plan",
            "-f",
            str(ROOT / "bench/fleets/two-datacenters.yaml"),
            "-o",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert fleet.startswith("{") and '"joint"' in fleet
    listing = subprocess.run(
        [str(py), "-m", "zipfile", "-l", str(wheel)], check=True, capture_output=True, text=True
    ).stdout
    assert "prfaas/model/case_study.yaml" in listing
    assert "tests/" not in listing


def test_wheel_carries_no_dev_tooling(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    packages = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert packages == {"prfaas"}
    dev = ("prfaas/demo/", "prfaas/devcluster.py", "prfaas/devprometheus.py")
    assert not [n for n in names if n.startswith(dev)]
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    runtime = [r for r in requires if "extra ==" not in r]
    assert not [r for r in runtime if "cryptography" in r], "cryptography is a dev dependency"
