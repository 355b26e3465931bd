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

debian() (  # a subshell: its EXIT trap cleans up however it ends
  have_image "$DEBIAN_IMAGE" && return 0
  command -v debootstrap >/dev/null || die "debootstrap is missing: hack/kind/docker.sh install"
  local root t
  root="$(mktemp -d)"
  trap '"${SUDO[@]}" rm -rf "'"$root"'"' EXIT
  t=$(date +%s)
  log "==> debootstrap --variant=minbase ${SUITE} (first time ~2 min)"
  "${SUDO[@]}" debootstrap --variant=minbase "$SUITE" "$root" "$(mirror)" >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; die "debootstrap failed (log: $root.log)"; }
  rm -f "$root.log"
  "${SUDO[@]}" rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  "${SUDO[@]}" tar -C "$root" -c . | docker import - "$DEBIAN_IMAGE" >/dev/null
  log "    ${DEBIAN_IMAGE} in $(elapsed "$t")"
)

build() {  # <tag> <context dir> [docker build args...]: the legacy builder, host network
  local tag="$1" ctx="$2" out
  shift 2
  out="$(mktemp)"
  # quiet unless it fails (the legacy builder's deprecation notice is noise here)
  if ! docker build --network host -t "$tag" "$@" "$ctx" >"$out" 2>&1; then
    tail -40 "$out" >&2; rm -f "$out"; die "docker build of $tag failed"
  fi
  rm -f "$out"
}

LOCAL_CA=/usr/local/share/ca-certificates   # update-ca-certificates' local certificates

python_base() (  # a subshell: its EXIT trap cleans up however it ends
  have_image "$PYTHON_IMAGE" && return 0
  debian
  log "==> ${PYTHON_IMAGE}: Debian's python3 and pip (~1 min)"
  local t ctx
  t=$(date +%s)
  ctx="$(mktemp -d)"
  trap 'rm -rf "'"$ctx"'"' EXIT
  cp "$HERE/python/Dockerfile" "$ctx/"
  mkdir -p "$ctx/local-ca"
  find "$LOCAL_CA" -maxdepth 2 -name '*.crt' -exec cp {} "$ctx/local-ca/" \; 2>/dev/null || true
  build "$PYTHON_IMAGE" "$ctx" --build-arg "BASE=${DEBIAN_IMAGE}"
  log "    built in $(elapsed "$t")"
)

# ---- the kind node image ----------------------------------------------------------------------

node_tag() {  # the node image's tag: the Kubernetes version and a hash of how it is built
  local h  # (the binaries' VERSIONS files name their versions and build times)
  h="$(cat "$HERE/images.sh" "$HERE/node/Dockerfile" "$HERE/pause/main.go" \
    "$("$HACK/build-k8s.sh" --node --print-dir)/../VERSIONS" \
    "$("$HACK/build-k8s.sh" --print-dir)/../VERSIONS" \
    <(echo "k8s ${K8S_VERSION} kind ${KIND_VERSION} ${SUITE}") 2>/dev/null | sha1sum | cut -c1-10)"
  echo "prfaas.local/kind-node:v${K8S_VERSION}-${h}"
}

prune() {  # older node images of this script (their layers are shared; dangling ones go too)
  local keep="$1" ref
  for ref in $(docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^prfaas\.local/kind-node(-base)?:'); do
    [[ "$ref" == "$keep" || "$ref" == "prfaas.local/kind-node-base:${keep##*:}" ]] || docker rmi "$ref" >/dev/null 2>&1 || true
  done
  docker image prune -f >/dev/null 2>&1 || true
}

kind_files() {  # kind's node files (images/base/files) from the kind module at its pinned version
  local dir
  dir="$(go mod download -json "sigs.k8s.io/kind@v${KIND_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
  [[ -d "$dir/images/base/files" ]] || die "sigs.k8s.io/kind@v${KIND_VERSION} has no images/base/files"
  echo "$dir/images/base/files"
}

component_image() {  # <tag> <base image or scratch> <binary> <path in image> [entrypoint json]
  local tag="$1" base="$2" bin="$3" path="$4" entry="${5:-}" ctx
  ctx="$(mktemp -d)"
  cp "$bin" "$ctx/bin"
  {
    echo "FROM ${base}"
    echo "COPY bin ${path}"
    [[ -z "$entry" ]] || echo "ENTRYPOINT ${entry}"
  } >"$ctx/Dockerfile"
  build "$tag" "$ctx"
  rm -rf "$ctx"
}

node() (  # a subshell: its EXIT trap cleans up however it ends
  local tag base t0 t
  tag="$(node_tag)"
  have_image "$tag" && return 0
  t0=$(date +%s)
  debian
  local nbin cbin
  nbin="$("$HACK/build-k8s.sh" --node)"   # kubelet, kubeadm, kube-proxy, ..., coredns, crictl
  cbin="$("$HACK/build-k8s.sh")"          # kube-apiserver, etcd, kubectl
  local work
  work="$(mktemp -d)"
  trap 'rm -rf "'"$work"'"' EXIT

  base="prfaas.local/kind-node-base:${tag##*:}"
  if ! have_image "$base"; then
    log "==> node base: kind v${KIND_VERSION}'s node files, Debian's containerd, runc, CNI plugins (~1 min)"
    t=$(date +%s)
    mkdir -p "$work/base"
    cp -r "$(kind_files)" "$work/base/files"
    chmod -R u+w "$work/base/files"
    cp "$HERE/node/Dockerfile" "$work/base/"
    build "$base" "$work/base" --build-arg "BASE=${DEBIAN_IMAGE}"
    log "    built in $(elapsed "$t")"
  fi

  log "==> control-plane images, tagged as kubeadm v${K8S_VERSION} expects them"
  t=$(date +%s)
  (cd "$HERE/pause" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/pause" .)
  local images=() ref name
  mapfile -t images < <("$nbin/kubeadm" config images list --kubernetes-version "v${K8S_VERSION}" 2>/dev/null)
  (( ${#images[@]} >= 6 )) || die "kubeadm config images list printed ${#images[@]} images"
  for ref in "${images[@]}"; do
    name="${ref##*/}"; name="${name%%:*}"
    case "$name" in
      kube-apiserver) component_image "$ref" "$DEBIAN_IMAGE" "$cbin/kube-apiserver" /usr/local/bin/kube-apiserver ;;
      kube-controller-manager|kube-scheduler)
        component_image "$ref" "$DEBIAN_IMAGE" "$nbin/$name" "/usr/local/bin/$name" ;;
      kube-proxy) component_image "$ref" "$base" "$nbin/kube-proxy" /usr/local/bin/kube-proxy '[]' ;;
      etcd) component_image "$ref" "$DEBIAN_IMAGE" "$cbin/etcd" /usr/local/bin/etcd ;;  # etcd of build-k8s.sh under kubeadm's tag
      coredns) component_image "$ref" scratch "$nbin/coredns" /coredns '["/coredns"]' ;;
      pause) component_image "$ref" scratch "$work/pause" /pause '["/pause"]' ;;
      *) die "kubeadm wants an image this script cannot build: $ref" ;;
    esac
  done
  docker save -o "$work/images.tar" "${images[@]}"
  log "    $(du -h "$work/images.tar" | cut -f1) in $(elapsed "$t")"

  log "==> node image ${tag}: binaries, the images inside its containerd (~1 min)"
  t=$(date +%s)
  local c
  c="$(docker run -d --privileged --network none --entrypoint sleep "$base" infinity)"
  # shellcheck disable=SC2064
  trap "docker rm -f $c >/dev/null 2>&1; rm -rf '$work'" EXIT
  local b
  for b in kubelet kubeadm; do docker cp "$nbin/$b" "$c:/usr/bin/$b"; done
  docker cp "$cbin/kubectl" "$c:/usr/bin/kubectl"
  docker cp "$nbin/crictl" "$c:/usr/local/bin/crictl"
  docker cp "$work/images.tar" "$c:/kind/images.tar"
  docker exec "$c" sh -euc "
    echo v${K8S_VERSION} > /kind/version
    containerd >/tmp/containerd.log 2>&1 &
    pid=\$!
    for i in \$(seq 1 60); do ctr version >/dev/null 2>&1 && break; sleep 0.5; done
    ctr --namespace=k8s.io images import --all-platforms --no-unpack --digests /kind/images.tar >/dev/null
    ctr --namespace=k8s.io images ls -q | sort
    kill \$pid; wait \$pid || true
    rm -f /kind/images.tar /tmp/containerd.log
  " >"$work/imported"
  for ref in "${images[@]}"; do
    grep -qx "$ref" "$work/imported" || die "$ref is not in the node's containerd"
  done
  docker commit --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
    --change 'CMD []' "$c" "$tag" >/dev/null
  log "    built in $(elapsed "$t"); node image done in $(elapsed "$t0")"
  prune "$tag"
)

case "${1:-}" in
  node) node; node_tag ;;
  node-tag) node_tag ;;
  debian) debian; echo "$DEBIAN_IMAGE" ;;
  python) python_base; echo "$PYTHON_IMAGE" ;;
  -h|--help|"") awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0" ;;
  *) die "unknown command: $1 (see --help)" ;;
esac
