"""The project image, built from the repo's ``Dockerfile`` in the project's Docker engine.

Tagged ``prfaas-operator:<version>-<hash>``, the hash over what goes into the image (the
Dockerfile, ``pyproject.toml``, ``README.md``, ``operator/``), so a change of the code is a new
image and an unchanged tree is not built twice. Its base is the public Python image for users;
here the base built from Debian's packages (``hack/kind/images.sh python``), as no registry is
reachable.

    python -m prfaas_dev.image        build if needed; prints the tag   (make image)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REPOSITORY = "prfaas-operator"
_INPUTS = ("Dockerfile", "pyproject.toml", "requirements.lock", "README.md", ".dockerignore")


class ImageError(RuntimeError):
    """The image could not be built."""


def version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def _files() -> list[Path]:
    tree = [
        p
        for p in sorted((REPO / "operator").rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    ]
    return [REPO / f for f in _INPUTS] + tree


def tag() -> str:
    h = hashlib.sha256()
    for path in _files():
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{REPOSITORY}:{version()}-{h.hexdigest()[:12]}"


def _hack(*args: str) -> str:
    out = subprocess.run(
        [str(REPO / "hack" / "kind" / args[0]), *args[1:]],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise ImageError(f"hack/kind/{' '.join(args)} failed (exit {out.returncode})")
    return out.stdout.strip().splitlines()[-1]


def build() -> str:
    """Build the image unless its tag exists; returns the tag."""
    name = tag()
    env = dict(os.environ, DOCKER_HOST=_hack("docker.sh", "start"))
    have = subprocess.run(
        ["docker", "image", "inspect", name], capture_output=True, env=env, check=False
    )
    if have.returncode == 0:
        return name
    base = _hack("images.sh", "python")
    print(f"==> docker build {name} (base {base}; ~3 min: pip fetches the wheels)", file=sys.stderr)
    proc = subprocess.run(
        [
            "docker",
            "build",
            "--network",
            "host",
            "--build-arg",
            f"BASE={base}",
            "--build-arg",
            f"VERSION={version()}",
            "-t",
            name,
            str(REPO),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise ImageError(f"docker build failed:\n{tail}")
    return name


def main() -> int:
    try:
        print(build())
    except ImageError as exc:
        print(f"image: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
