#!/usr/bin/env bash
# The project's own Docker engine (rootful), separate from any other Docker on the machine:
# its own socket, exec root and data root, so its images (the kind node image, the project
# image) are cached by version outside the repo and nothing else is touched.
#
#   socket     ${PRFAAS_DOCKER_RUN:-/run/prfaas-docker}/docker.sock  (DOCKER_HOST=unix://...)
#   data root  ${PRFAAS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/prfaas-operator}/docker
#   log        <data root>.log
#
# Usage:
#   hack/kind/docker.sh install   install Debian's docker.io, debootstrap, jq if missing (apt)
#   hack/kind/docker.sh start     start it unless it runs; prints the DOCKER_HOST value
#   hack/kind/docker.sh stop      stop it and every container it runs (the kind nodes)
#   hack/kind/docker.sh status    exit 0 if it answers
#   hack/kind/docker.sh run CMD.. run CMD with it up (DOCKER_HOST set); if this started it, it is
#                                 stopped afterwards, also when CMD fails or is interrupted
#   hack/kind/docker.sh host      print the DOCKER_HOST value
#
# The daemon runs containers through hack/kind/runc-nocap (see there: a workaround for VMs whose
# capability bounding set lacks a capability, which breaks privileged containers). It gets no
# default bridge (--bridge=none): kind's nodes use the project's own network and image builds
# use the host's network, so the machine's docker0 (if any) is left alone.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN="${PRFAAS_DOCKER_RUN:-/run/prfaas-docker}"
CACHE_ROOT="${PRFAAS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/prfaas-operator}"
DATA="${CACHE_ROOT}/docker"
SOCK="${RUN}/docker.sock"
PIDFILE="${RUN}/dockerd.pid"
LOG="${DATA}.log"
export DOCKER_HOST="unix://${SOCK}"

log() { printf '%s\n' "$*" >&2; }
die() { log "docker.sh: $*"; exit 1; }
if [[ "$(id -u)" == 0 ]]; then SUDO=(); else SUDO=(sudo); fi

answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

install() {
  local want=() c
  command -v dockerd >/dev/null || want+=(docker.io)
  command -v debootstrap >/dev/null || want+=(debootstrap)
  command -v jq >/dev/null || want+=(jq)
  command -v iptables >/dev/null || want+=(iptables)
  (( ${#want[@]} )) || return 0
  log "==> installing Debian's ${want[*]} (~30 s)"
  # policy-rc.d: the package must not start a system-wide daemon; we start our own
  local policy=/usr/sbin/policy-rc.d made=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod +x "$policy"; made=1
  fi
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
    "${want[@]}" >/dev/null
  (( made )) && "${SUDO[@]}" rm -f "$policy"
  for c in dockerd docker debootstrap jq; do command -v "$c" >/dev/null || die "$c is still missing"; done
}

start() {
  if answers; then echo "$DOCKER_HOST"; return 0; fi
  install
  "${SUDO[@]}" mkdir -p "$RUN" "$DATA"
  # One start at a time (make and pytest at once); the loser finds the daemon answering.
  exec 8>"${RUN}/.start.lock"
  flock 8
  if answers; then echo "$DOCKER_HOST"; return 0; fi
  local runc
  runc="$(command -v runc)" || die "runc is missing (it comes with docker.io)"
  sed "s|^REAL_RUNC=.*|REAL_RUNC=\"\${REAL_RUNC:-${runc}}\"|" "$HERE/runc-nocap" >"${RUN}/prfaas-runc"
  chmod 755 "${RUN}/prfaas-runc"
  # a pidfile left by a daemon that died (machine restart, kill -9) would end the wait below at once
  if [[ -f "$PIDFILE" ]] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    "${SUDO[@]}" rm -f "$PIDFILE"
  fi
  local group=()
  [[ "$(id -u)" == 0 ]] || group=(--group "$(id -gn)")
  log "==> starting the project's Docker engine (data in ${DATA}, log in ${LOG})"
  # setsid: not in our process group, so Ctrl-C on make does not kill it half-way
  "${SUDO[@]}" setsid dockerd \
    --host "$DOCKER_HOST" --pidfile "$PIDFILE" --exec-root "${RUN}/exec" --data-root "$DATA" \
    --bridge none --add-runtime "prfaas-runc=${RUN}/prfaas-runc" --default-runtime prfaas-runc \
    --log-level warn "${group[@]}" >>"$LOG" 2>&1 </dev/null &
  local i
  for ((i = 0; i < 120; i++)); do
    answers && { log "    ready ($(docker version --format 'server {{.Server.Version}}'))"; echo "$DOCKER_HOST"; return 0; }
    [[ -f "$PIDFILE" ]] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null && break
    sleep 0.5
  done
  tail -20 "$LOG" >&2
  die "dockerd did not come up (log above, full log in ${LOG})"
}

stop() {
  [[ -f "$PIDFILE" ]] || { log "==> the project's Docker engine is not running"; return 0; }
  local pid
  pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null; then
    log "==> stopping the project's Docker engine (pid $pid) and its containers"
    if answers; then
      local ids
      ids="$(docker ps -q)"
      [[ -z "$ids" ]] || docker rm -f $ids >/dev/null 2>&1 || true
    fi
    "${SUDO[@]}" kill -TERM "$pid"
    local i
    for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { "${SUDO[@]}" kill -KILL "$pid"; log "    killed"; }
  fi
  "${SUDO[@]}" rm -f "$PIDFILE"
}

run() {
  local started=0 rc=0
  answers || { start >/dev/null; started=1; }
  if (( started )); then trap 'stop' EXIT; trap 'exit 130' INT TERM; fi
  "$@" || rc=$?
  return "$rc"
}

case "${1:-}" in
  install) install ;;
  run) shift; [[ $# -gt 0 ]] || die "run: give a command"; run "$@" ;;
  start) start ;;
  stop) stop ;;
  status) answers ;;
  host) echo "$DOCKER_HOST" ;;
  -h|--help|"") awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0" ;;
  *) die "unknown command: $1 (see --help)" ;;
esac
