"""Where `make peers` (hack/peers.sh) put the third-party routers and load generator.

Each tool lives in its own virtualenv under the version-keyed cache
``${PRFAAS_CACHE:-${XDG_CACHE_HOME:-~/.cache}/prfaas-operator}/peers-<tool>-<version>/``; the
versions are read from hack/peers.sh itself (one source of truth; the same environment overrides
apply). A venv counts as installed only once its stamp file is there (written last).

    from prfaas_dev.peers import sglang_router, require_all
    argv = sglang_router()            # None when not installed
    tools = require_all()             # PeersMissingError("... run `make peers`") when not

``python -m prfaas_dev.peers`` prints what it finds (exit 1 if something is missing).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# the repository this (editable) package is installed from: hack/peers.sh is the source of truth
REPO = Path(__file__).resolve().parents[2]
PEERS_SH = REPO / "hack" / "peers.sh"
STAMP_NAME = ".prfaas-installed"
HF_REPO = "local/deepseek-tokenizer"
TOOLS = ("sglang-router", "vllm-router", "aiperf")
_VERSION_VARS = {
    "sglang-router": "SGLANG_ROUTER_VERSION",
    "vllm-router": "VLLM_ROUTER_VERSION",
    "aiperf": "AIPERF_VERSION",
}


class PeersMissingError(RuntimeError):
    """A peer tool is not installed (the message says how to install it)."""


@cache
def _default_versions() -> dict[str, str]:
    text = PEERS_SH.read_text()
    found = {}
    for tool, var in _VERSION_VARS.items():
        m = re.search(rf'^{var}="\$\{{{var}:-([^}}]+)\}}"', text, re.MULTILINE)
        if not m:
            raise RuntimeError(f"{PEERS_SH}: no default for {var}")
        found[tool] = m.group(1)
    return found


def version(tool: str) -> str:
    if tool not in _VERSION_VARS:
        raise ValueError(f"unknown peer {tool!r} (known: {', '.join(TOOLS)})")
    return os.environ.get(_VERSION_VARS[tool]) or _default_versions()[tool]


def cache_root() -> Path:
    if root := os.environ.get("PRFAAS_CACHE"):
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "prfaas-operator"


def venv_dir(tool: str) -> Path:
    return cache_root() / f"peers-{tool}-{version(tool)}"


def installed(tool: str) -> bool:
    return (venv_dir(tool) / STAMP_NAME).is_file()


@dataclass(frozen=True)
class Aiperf:
    """aiperf and its offline tokenizer: run ``argv`` with ``env()`` added to the environment."""

    exe: Path
    hf_home: Path
    tokenizer: str = HF_REPO

    @property
    def argv(self) -> list[str]:
        return [str(self.exe)]

    def env(self, scratch: Path | None = None) -> dict[str, str]:
        """``scratch``: where aiperf puts its dataset's memory maps, which it leaves behind
        after every run (by default in the system's temporary directory). Not ``TMPDIR``: its
        ZeroMQ sockets live there, and a Unix socket's path must stay under 108 bytes."""
        env = {"HF_HOME": str(self.hf_home), "HF_HUB_OFFLINE": "1"}
        if scratch is not None:
            scratch.mkdir(parents=True, exist_ok=True)
            env["AIPERF_DATASET_MMAP_BASE_PATH"] = str(scratch)
        return env


def sglang_router() -> list[str] | None:
    """argv prefix of ``python -m sglang_router.launch_router``, or None if not installed."""
    if not installed("sglang-router"):
        return None
    return [str(venv_dir("sglang-router") / "bin" / "python"), "-m", "sglang_router.launch_router"]


def vllm_router() -> list[str] | None:
    """argv prefix of ``vllm-router``, or None if not installed."""
    if not installed("vllm-router"):
        return None
    return [str(venv_dir("vllm-router") / "bin" / "vllm-router")]


def aiperf() -> Aiperf | None:
    if not installed("aiperf"):
        return None
    d = venv_dir("aiperf")
    return Aiperf(exe=d / "bin" / "aiperf", hf_home=d / "hf-home")


def _missing(tool: str) -> PeersMissingError:
    return PeersMissingError(
        f"{tool} {version(tool)} is not installed (no {venv_dir(tool) / STAMP_NAME}): "
        "run `make peers` (about 2 min the first time)"
    )


def require_sglang_router() -> list[str]:
    argv = sglang_router()
    if argv is None:
        raise _missing("sglang-router")
    return argv


def require_vllm_router() -> list[str]:
    argv = vllm_router()
    if argv is None:
        raise _missing("vllm-router")
    return argv


def require_aiperf() -> Aiperf:
    found = aiperf()
    if found is None:
        raise _missing("aiperf")
    return found


@dataclass(frozen=True)
class Peers:
    sglang_router: list[str]
    vllm_router: list[str]
    aiperf: Aiperf


def require_all() -> Peers:
    """All three, or one PeersMissingError naming every missing tool."""
    missing = [t for t in TOOLS if not installed(t)]
    if missing:
        names = ", ".join(f"{t} {version(t)}" for t in missing)
        raise PeersMissingError(
            f"not installed: {names} (under {cache_root()}): run `make peers` "
            "(about 2 min the first time)"
        )
    return Peers(require_sglang_router(), require_vllm_router(), require_aiperf())


def main() -> int:
    ok = True
    for tool in TOOLS:
        state = "installed" if installed(tool) else "MISSING"
        ok &= installed(tool)
        print(f"{tool:14} {version(tool):8} {state:9} {venv_dir(tool)}")
    if found := aiperf():
        print(f"{'HF_HOME':14} {'':8} {'':9} {found.hf_home} (tokenizer {found.tokenizer})")
    if not ok:
        print("run `make peers`", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
