#!/usr/bin/env bash
# Container images built on this machine, from Debian's packages and Go modules only (no image
# is pulled from a registry), into the project's Docker engine (hack/kind/docker.sh), each
# tagged by what it is built from, so a second run only checks the tags:
#
#   prfaas.local/debian:<suite>          debootstrap --variant=minbase of the host's suite
#   prfaas.local/python:<suite>          + Debian's python3 and pip (the project image's test base)
#   prfaas.local/kind-node:v<K>-<hash>   a kind node image: Kubernetes v<K> (hack/build-k8s.sh
#                                        --node), Debian's containerd/runc/CNI plugins, the
#                                        control-plane images inside its containerd
#
# Usage:
#   hack/kind/images.sh node        build what is missing; prints the node image
#   hack/kind/images.sh python      build what is missing; prints the python base image
#   hack/kind/images.sh node-tag    print the node image's tag, build nothing
#
# Needs: hack/kind/docker.sh start (DOCKER_HOST), debootstrap, Go (for the binaries).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HACK="$(dirname "$HERE")"
export DOCKER_HOST="${DOCKER_HOST:-$("$HERE/docker.sh" host)}"
K8S_VERSION="${K8S_VERSION:-1.36.3}"
KIND_VERSION="${KIND_VERSION:-0.33.0}"
SUITE="${PRFAAS_DEBIAN_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}"
DEBIAN_IMAGE="prfaas.local/debian:${SUITE}"
# The machine's own CAs (if any) go into the python base: a change of them is a new tag.
PYTHON_IMAGE="prfaas.local/python:${SUITE}-$(cat "$HERE/python/Dockerfile" /usr/local/share/ca-certificates/*.crt 2>/dev/null | sha1sum | cut -c1-8)"

log() { printf '%s\n' "$*" >&2; }
die() { log "images.sh: $*"; exit 1; }
elapsed() { local s=$(( $(date +%s) - $1 )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
if [[ "$(id -u)" == 0 ]]; then SUDO=(); else SUDO=(sudo); fi

mirror() {  # the Debian mirror this machine's apt uses for $SUITE
  local uri
  uri="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null \
    | awk -v s="$SUITE" '$2 == s {print $1; exit}')"
  [[ -n "$uri" ]] || die "apt has no source for suite ${SUITE} (set PRFAAS_DEBIAN_SUITE?)"
  echo "$uri"
}

debian() {
  have_image "$DEBIAN_IMAGE" && return 0
  command -v debootstrap >/dev/null || die "debootstrap is missing: hack/kind/docker.sh install"
  local root t
  root="$(mktemp -d)"
  trap '"${SUDO[@]}" rm -rf "'"$root"'"' RETURN
  t=$(date +%s)
  log "==> debootstrap --variant=minbase ${SUITE} (first time ~2 min)"
  "${SUDO[@]}" debootstrap --variant=minbase "$SUITE" "$root" "$(mirror)" >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; die "debootstrap failed (log: $root.log)"; }
  rm -f "$root.log"
  "${SUDO[@]}" rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  "${SUDO[@]}" tar -C "$root" -c . | docker import - "$DEBIAN_IMAGE" >/dev/null
  log "    ${DEBIAN_IMAGE} in $(elapsed "$t")"
}

build() {  # <tag> <context dir> [docker build args...]: the legacy builder, host network
  local tag="$1" ctx="$2"
  shift 2
  docker build --network host -q -t "$tag" "$@" "$ctx" >/dev/null
}

LOCAL_CA=/usr/local/share/ca-certificates   # update-ca-certificates' local certificates

python_base() {
  have_image "$PYTHON_IMAGE" && return 0
  debian
  log "==> ${PYTHON_IMAGE}: Debian's python3 and pip (~1 min)"
  local t ctx
  t=$(date +%s)
  ctx="$(mktemp -d)"
  trap 'rm -rf "'"$ctx"'"' RETURN
  cp "$HERE/python/Dockerfile" "$ctx/"
  mkdir -p "$ctx/local-ca"
  find "$LOCAL_CA" -maxdepth 2 -name '*.crt' -exec cp {} "$ctx/local-ca/" \; 2>/dev/null || true
  build "$PYTHON_IMAGE" "$ctx" --build-arg "BASE=${DEBIAN_IMAGE}"
  log "    built in $(elapsed "$t")"
}

case "${1:-}" in
  debian) debian; echo "$DEBIAN_IMAGE" ;;
  python) python_base; echo "$PYTHON_IMAGE" ;;
  -h|--help|"") sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command: $1 (see --help)" ;;
esac
