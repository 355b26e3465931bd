#!/usr/bin/env bash
# Times the cold set-up the kind tests need, as a fresh machine would run it: empty Go build and
# module caches, an empty project cache (so its own Docker engine starts with no images), in a
# scratch directory that is removed afterwards. Prints one line per step. Takes ~45 min on 2
# cores; the machine's own caches are not touched.
#
#   hack/kind/time-cold.sh [SCRATCH_DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SCRATCH="${1:-$(mktemp -d)}"
export PRFAAS_CACHE="$SCRATCH/cache" GOCACHE="$SCRATCH/gocache" GOMODCACHE="$SCRATCH/gomod"
export PRFAAS_DOCKER_RUN=/run/prfaas-docker-cold  # its own daemon, next to any running one
trap 'chmod -R u+w "$SCRATCH" 2>/dev/null; rm -rf "$SCRATCH"' EXIT
step() { local t0=$SECONDS; "$@" >"$SCRATCH.log" 2>&1 || { tail -20 "$SCRATCH.log"; exit 1; }; echo "$1 ${*:2}: $((SECONDS - t0)) s"; }
t0=$SECONDS
step make k8s-bin
step make kind-bin
step hack/kind/docker.sh run sh -c 'hack/kind/images.sh node'
step hack/kind/docker.sh run sh -c '.venv/bin/python -m prfaas_dev.image'
echo "total: $((SECONDS - t0)) s"
