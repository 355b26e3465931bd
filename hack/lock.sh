#!/usr/bin/env bash
# requirements.lock: the image's runtime dependencies, every version pinned with the sha256 of
# every file PyPI has for it (any platform), resolved by uv from pyproject.toml's
# [project.dependencies]. The Dockerfile installs exactly this set (pip --require-hashes
# --no-deps --only-binary). Re-run after changing the dependencies (`make lock`); a unit test
# fails when the lock no longer satisfies pyproject.toml.
#
# Left out: what only tokenizers' Hub download path needs (huggingface-hub and its own
# dependencies). The router reads a local tokenizer.json (Tokenizer.from_file), never the Hub.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
UV="${UV:-.venv/bin/uv}"
[[ -x "$UV" ]] || { echo "lock.sh: uv is missing (make venv installs it)" >&2; exit 1; }
HUB_ONLY=(huggingface-hub hf-xet fsspec filelock tqdm colorama httpx2 httpcore2 httpx2-jsfetch
  anyio h11 truststore packaging)
args=()
for p in "${HUB_ONLY[@]}"; do args+=(--no-emit-package "$p"); done
"$UV" pip compile pyproject.toml --generate-hashes --universal --python-version 3.11 \
  --annotation-style line --quiet "${args[@]}" --custom-compile-command "make lock" \
  -o requirements.lock
echo "==> requirements.lock: $(grep -c '==' requirements.lock) packages"
