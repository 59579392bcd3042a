#!/usr/bin/env bash
# The sbtc-ops Docker lab: a real dockerd of its own and a compose deployment shaped like the
# reference sBTC signer deployment (stacks-sbtc/sbtc docker/mainnet), for the `docker` tests.
#
# Usage: lab.sh STEP...     (root; idempotent; every step may be run again)
#   install  apt: docker.io (dockerd 20.10), docker-compose (1.29), debootstrap, if missing
#   base     debootstrap bookworm (+ postgresql, python3) -> rootfs tarball, cached in $LAB_CACHE
#   start    start our own dockerd (own socket, pidfile, exec-root, data-root; no iptables)
#   image    docker import of the cached rootfs -> sbtc-ops-lab/debian:bookworm
#   up       copy tests/lab/project to $LAB_PROJECT, write .env, compose up (signer + nodes)
#   down     compose down both files (containers, networks)
#   stop     down, stop dockerd, undo every host change it made, delete the data-root
#   env      print the variables a client needs (DOCKER_HOST, LAB_PROJECT, ...)
# Default steps: install base start image up
#
# Host changes: dockerd runs with --iptables=false --ip-forward=false --bridge=none, so it
# touches no firewall table, no sysctl and creates no docker0; published ports are served by
# docker-proxy. Compose networks create br-* links, and containers create mounts under the
# data-root and exec-root; `stop` removes what is left of them and checks nothing remains.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
LAB_RUN=${LAB_RUN:-/run/sbtc-ops-lab}
LAB_CACHE=${LAB_CACHE:-/var/cache/sbtc-ops-lab}
SOCK=$LAB_RUN/docker.sock
PIDFILE=$LAB_RUN/docker.pid
EXEC_ROOT=$LAB_RUN/exec
STATE=$LAB_RUN/state
BASE_IMAGE=sbtc-ops-lab/debian:bookworm
SUITE=bookworm
# Debian packages baked into the base image: the lab's containers never reach the network.
INCLUDE=postgresql-15,python3,ca-certificates,procps,curl
ADDRESS_POOL=${LAB_ADDRESS_POOL:-10.203.0.0/16}
PROJECT_NAME=${LAB_PROJECT_NAME:-sbtc-lab}
export DOCKER_HOST=unix://$SOCK
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=docker

log() { printf '[lab %(%T)T] %s\n' -1 "$*" >&2; }
now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
daemon_up() { [ -S "$SOCK" ] && timeout 5 "$DOCKER" version >/dev/null 2>&1; }

debian_mirror() {
  local m=""
  if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    m=$(awk '/^URIs:/{print $2}' /etc/apt/sources.list.d/debian.sources | grep -v security | head -n1)
  fi
  if [ -z "$m" ] && [ -r /etc/apt/sources.list ]; then
    m=$(awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

project_dir() {  # the deployment copy lives outside /tmp, recorded so every step finds it
  if [ -f "$LAB_RUN/project-dir" ]; then cat "$LAB_RUN/project-dir"; return; fi
  mkdir -p "$LAB_RUN"
  local d; d=$(mktemp -d /var/tmp/sbtc-ops-lab.XXXXXX)
  echo "$d" > "$LAB_RUN/project-dir"; echo "$d"
}

# ------------------------------------------------------------------ install
step_install() {
  local missing=() p
  for p in docker.io docker-compose debootstrap; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "apt-get install ${missing[*]}"
  # Keep the package's postinst from starting a stock dockerd on /var/run/docker.sock.
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" iproute2 ca-certificates >/dev/null
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  return 0
}

# ------------------------------------------------------------------ base rootfs
step_base() {
  local tarball=$LAB_CACHE/rootfs-$SUITE.tar
  [ -s "$tarball" ] && return
  mkdir -p "$LAB_CACHE"
  local t0; t0=$(now)
  local root; root=$(mktemp -d /var/tmp/sbtc-ops-lab-rootfs.XXXXXX)
  log "debootstrap $SUITE (+$INCLUDE) from $(debian_mirror)"
  if ! timeout 1200 debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$root" "$(debian_mirror)" \
      >"$LAB_CACHE/debootstrap.log" 2>&1; then
    tail -20 "$LAB_CACHE/debootstrap.log" >&2; rm -rf "$root"; return 1
  fi
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/lib/postgresql/15/main "$root"/etc/postgresql/15/main
  tar -C "$root" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
  rm -rf "$root"
  log "base rootfs cached in $tarball ($(du -h "$tarball" | cut -f1), $(took "$t0") s)"
}

# ------------------------------------------------------------------ daemon
save_host_state() {
  [ -f "$STATE/saved" ] && return
  mkdir -p "$STATE"
  cat /proc/sys/net/ipv4/ip_forward > "$STATE/ip_forward"
  ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' > "$STATE/links"
  touch "$STATE/saved"
}

step_start() {
  if daemon_up; then return; fi
  [ "$(id -u)" = 0 ] || { echo "the Docker lab needs root" >&2; return 1; }
  command -v dockerd >/dev/null || { echo "dockerd is not installed (run: $0 install)" >&2; return 1; }
  mkdir -p "$LAB_RUN" "$EXEC_ROOT"
  save_host_state
  local data_root
  if [ -f "$LAB_RUN/data-root" ]; then data_root=$(cat "$LAB_RUN/data-root")
  else data_root=$(mktemp -d /var/tmp/sbtc-ops-lab-docker.XXXXXX); echo "$data_root" > "$LAB_RUN/data-root"; fi
  local t0; t0=$(now)
  # Own socket/pidfile/exec-root/data-root: never collides with a system dockerd. Its own
  # containerd lives under the exec-root and exits with it.
  setsid dockerd \
    --host "unix://$SOCK" --pidfile "$PIDFILE" --exec-root "$EXEC_ROOT" --data-root "$data_root" \
    --storage-driver overlay2 --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
    --default-address-pool "base=$ADDRESS_POOL,size=24" \
    --log-level warn >>"$LAB_RUN/dockerd.log" 2>&1 </dev/null &
  local i
  for i in $(seq 1 600); do daemon_up && break; sleep 0.1; done
  daemon_up || { tail -20 "$LAB_RUN/dockerd.log" >&2; log "dockerd did not come up"; return 1; }
  log "dockerd pid $(cat "$PIDFILE") up in $(took "$t0") s"
}

# ------------------------------------------------------------------ base image
step_image() {
  "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return
  local t0; t0=$(now)
  "$DOCKER" import --change 'CMD ["bash"]' "$LAB_CACHE/rootfs-$SUITE.tar" "$BASE_IMAGE" >/dev/null
  log "imported $BASE_IMAGE in $(took "$t0") s"
}

# ------------------------------------------------------------------ deployment
compose() {
  local p; p=$(project_dir)
  (cd "$p" && docker-compose -p "$PROJECT_NAME" -f docker-compose.yml -f nodes/docker-compose.chains.yml "$@")
}

step_up() {
  local p; p=$(project_dir)
  if [ ! -f "$p/.env" ]; then
    cp -a "$HERE/project/." "$p/"
    # The reference's .env: signer private key and DB password as plain variables. Planted
    # for the audit: world-readable, and the password is PostgreSQL's default.
    local key; key=${LAB_SIGNER_PRIVATE_KEY:-$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')}
    cat > "$p/.env" <<ENV
POSTGRES_PASSWORD=${LAB_POSTGRES_PASSWORD:-postgres}
SIGNER_SIGNER__PRIVATE_KEY=$key
BITCOIN_RPC_USERNAME=lab
BITCOIN_RPC_PASSWORD=lab-rpc-password
BITCOIN_RPC_HOST=bitcoin
STACKS_RPC_HOST=stacks-core
EMILY_API_KEY=lab-emily-key
ENV
    chmod 0644 "$p/.env"
    mkdir -p "$p/postgres/data"
  fi
  local t0; t0=$(now)
  # COPY-only builds: no container networking needed (the daemon has no default bridge).
  "$DOCKER" build -q -t sbtc-ops-lab/postgres:15 "$HERE/images/postgres" >/dev/null
  "$DOCKER" build -q -t sbtc-ops-lab/signer:latest "$HERE/images/standin" >/dev/null
  compose up -d >"$LAB_RUN/compose-up.log" 2>&1 || { tail -30 "$LAB_RUN/compose-up.log" >&2; return 1; }
  local i
  for i in $(seq 1 300); do
    [ "$("$DOCKER" inspect -f '{{.State.Health.Status}}' postgres 2>/dev/null)" = healthy ] && break
    sleep 0.2
  done
  [ "$("$DOCKER" inspect -f '{{.State.Health.Status}}' postgres)" = healthy ] \
    || { "$DOCKER" logs postgres 2>&1 | tail -20 >&2; log "postgres did not become healthy"; return 1; }
  log "compose up in $(took "$t0") s ($p)"
}

step_down() {
  daemon_up || return 0
  [ -f "$LAB_RUN/project-dir" ] || return 0
  compose down -v --remove-orphans -t 2 >"$LAB_RUN/compose-down.log" 2>&1 || true
}

# ------------------------------------------------------------------ stop / cleanup
step_stop() {
  local t0; t0=$(now)
  step_down
  log "compose down: $(took "$t0") s"
  local pid=""
  [ -f "$PIDFILE" ] && pid=$(cat "$PIDFILE")
  if [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = dockerd ]; then
    local kids; kids=$(pgrep -P "$pid" || true)
    kill -TERM "$pid"
    local i
    for i in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    for k in $kids; do kill -0 "$k" 2>/dev/null && kill -TERM "$k"; done
  fi
  log "dockerd stopped: $(took "$t0") s"
  local data_root=""
  [ -f "$LAB_RUN/data-root" ] && data_root=$(cat "$LAB_RUN/data-root")
  # Mounts dockerd leaves behind (overlay, netns, shm), deepest first.
  awk '{print $2}' /proc/mounts | grep -E "^(${data_root:-/nonexistent}|$LAB_RUN)(/|$)" | sort -r \
    | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
  if [ -f "$STATE/links" ]; then
    ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E '^(br-[0-9a-f]{12}|veth[0-9a-f]+)$' \
      | while read -r l; do grep -qx "$l" "$STATE/links" || ip link del "$l" 2>/dev/null || true; done || true
  fi
  [ -f "$STATE/ip_forward" ] && cat "$STATE/ip_forward" > /proc/sys/net/ipv4/ip_forward
  log "mounts and links cleaned: $(took "$t0") s"
  [ -n "$data_root" ] && rm -rf "$data_root"
  [ -f "$LAB_RUN/project-dir" ] && rm -rf "$(cat "$LAB_RUN/project-dir")"
  rm -rf "$LAB_RUN"
  log "stopped in $(took "$t0") s"
  check_clean
}

check_clean() {  # fail loudly if anything of the lab survived
  local bad=0
  if awk '{print $2}' /proc/mounts | grep -qE "^(/var/tmp/sbtc-ops-lab|$LAB_RUN)"; then log "mounts left"; bad=1; fi
  if pgrep -f "dockerd --host unix://$SOCK" >/dev/null; then log "dockerd left"; bad=1; fi
  return $bad
}

step_env() {
  echo "DOCKER_HOST=$DOCKER_HOST"
  echo "LAB_PROJECT=$(project_dir)"
  echo "LAB_PROJECT_NAME=$PROJECT_NAME"
}

steps=("$@"); [ ${#steps[@]} -gt 0 ] || steps=(install base start image up)
for s in "${steps[@]}"; do "step_$s"; done
