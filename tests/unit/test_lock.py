"""``requirements.lock`` (what the image installs, ``make lock``) against ``pyproject.toml``."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
# What the lock leaves out on purpose (hack/lock.sh): tokenizers' Hub download path.
HUB_ONLY = {"huggingface-hub", "hf-xet", "fsspec", "filelock", "tqdm", "httpx2", "anyio"}


def _lock() -> dict[str, list[tuple[str, str, list[str]]]]:
    """name -> [(version, marker, hashes)] (a name may be pinned per Python version)."""
    text = (REPO / "requirements.lock").read_text()
    out: dict[str, list[tuple[str, str, list[str]]]] = {}
    for block in re.split(r"\n(?=\S)", text):
        head = block.split("\\", 1)[0].strip()
        if not head or head.startswith("#"):
            continue
        spec, _, marker = head.partition(";")
        name, _, version = spec.strip().partition("==")
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
        out.setdefault(canonicalize_name(name), []).append((version, marker.strip(), hashes))
    return out


def test_every_pin_has_hashes_and_an_exact_version() -> None:
    lock = _lock()
    assert len(lock) > 30
    for name, pins in lock.items():
        for version, _, hashes in pins:
            assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), (name, version)
            assert hashes, f"{name}=={version} has no hash"


def test_the_lock_satisfies_every_runtime_dependency_of_pyproject() -> None:
    with (REPO / "pyproject.toml").open("rb") as f:
        deps = [Requirement(d) for d in tomllib.load(f)["project"]["dependencies"]]
    lock = _lock()
    env = {"python_full_version": "3.11.13", "python_version": "3.11", "sys_platform": "linux"}
    for req in deps:
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        pins = lock.get(canonicalize_name(req.name))
        assert pins, f"{req.name} is missing from requirements.lock: run make lock"
        for version, marker, _ in pins:
            applies = not marker or Requirement(f"x; {marker}").marker.evaluate(env)  # type: ignore[union-attr]
            if applies:
                assert req.specifier.contains(version, prereleases=True), (
                    f"requirements.lock pins {req.name}=={version}, pyproject.toml wants "
                    f"{req.specifier}: run make lock"
                )
    assert not HUB_ONLY & set(lock), "the Hub client crept back into the image"


def test_text_token_counts_work_without_the_hub_client(tmp_path: Path) -> None:
    """The image has tokenizers but not huggingface_hub: a local tokenizer.json must load."""
    from tokenizers import Tokenizer, models

    path = tmp_path / "tokenizer.json"
    Tokenizer(models.WordLevel({"hello": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(path))
    code = (
        "import sys\n"
        "for m in ('huggingface_hub', 'hf_xet', 'fsspec', 'tqdm', 'httpx'): sys.modules[m] = None\n"
        "from prfaas.serving.tokenizer import Counter\n"
        f"print(Counter({str(path)!r}).exact_text)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
