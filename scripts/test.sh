#!/usr/bin/env bash
# Installs everything the test suite needs, then runs it: ruff, mypy and pytest.
# Safe to run again; on a fresh Debian machine it needs root (apt-get) — CI runs it as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# The venv lives under /opt (world-traversable) because the PostgreSQL servers the tests start
# must run as an unprivileged user that can read the embedded PostgreSQL binaries in it.
VENV="${SBTC_OPS_TEST_VENV:-/opt/sbtc-ops-test-venv}"
DEBIAN_PACKAGES=(nftables iproute2 prometheus chromium openssh-server procps)
# The restore drill's sandbox: bubblewrap, newuidmap (uidmap), unshare/setpriv (util-linux) and
# the decompressors it runs.
DEBIAN_PACKAGES+=(util-linux gzip zstd bubblewrap uidmap)
# The shipped systemd unit under a real systemd 252 (tests/test_systemd_unit.py: systemd-nspawn
# boots the host's own /usr with systemd as its PID 1).
DEBIAN_PACKAGES+=(systemd systemd-container)
# The fault matrix's real faults: a loop device (losetup, util-linux) holding ext4 (mkfs.ext4).
DEBIAN_PACKAGES+=(e2fsprogs)
# PostgreSQL 15 binaries (/usr/lib/postgresql/15/bin, run by our own throwaway clusters, never
# as a system service): schema identity must hold for sources on 15 as on the embedded 18
# (tests/test_schema_identity.py), and the shipped schema references must come out the same
# (tests/test_schema_real_migrations.py, scripts/schema_digests.py --compare-bin-dir).
DEBIAN_PACKAGES+=(postgresql-15)
# The documented key restore (docs/key-custody.md, tests/test_recovery_docs.py) runs age -d.
DEBIAN_PACKAGES+=(age)
# The Docker lab's packages (tests/lab/lab.sh): installed here with the rest, so the lab's
# own install step has nothing left to do; its postinst must not start a stock dockerd.
# A machine that already has a Docker engine (e.g. docker-ce, which conflicts with docker.io)
# keeps it: the lab only needs a dockerd binary.
DEBIAN_PACKAGES+=(docker-compose debootstrap)
command -v dockerd >/dev/null || DEBIAN_PACKAGES+=(docker.io)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${missing[*]}" >&2
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  else
    echo "warning: missing Debian packages (${missing[*]}); the tests that need them will be skipped" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# Exactly the locked versions, every file checked against its hash (requirements/test.lock:
# the runtime lock's pins plus the test tools; scripts/lock.sh regenerates both), then the
# checkout itself with nothing resolved again.
"$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes -r requirements/test.lock
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e .

LINT_PATHS=(src tests)
[ -d bench ] && LINT_PATHS+=(bench)
"$VENV/bin/ruff" check "${LINT_PATHS[@]}"
"$VENV/bin/ruff" format --check "${LINT_PATHS[@]}"
"$VENV/bin/mypy"
# The layers and no-cycle contracts of docs/architecture.md ([tool.importlinter] in pyproject.toml).
"$VENV/bin/lint-imports" --no-cache
# The Docker lab (tests/lab/lab.sh: docker.io, debootstrap, a dockerd of its own) runs the
# `docker` tests in a second pytest process, in parallel with the rest; its output is shown
# when it ends. Either group failing fails the run. SBTC_OPS_DOCKER_LAB=off skips the lab.
export PATH="$VENV/bin:$PATH"
docker_log=$(mktemp /var/tmp/sbtc-ops-docker-tests.XXXXXX)
trap 'rm -f "$docker_log"' EXIT
pytest -q -p no:cacheprovider -m docker "$@" >"$docker_log" 2>&1 &
docker_pid=$!
main_log=$(mktemp /var/tmp/sbtc-ops-main-tests.XXXXXX)
trap 'rm -f "$docker_log" "$main_log"' EXIT
set +e
# The main group runs on SBTC_OPS_TEST_WORKERS pytest-xdist workers (default 3: on 2 cores most
# tests wait on child processes — sbtc-ops, PostgreSQL, weed — so a third worker fills the
# gaps), whole files per worker (--dist loadfile: a module's fixture, e.g. a drill corpus, is
# built once); docs/testing.md has the measurements. SBTC_OPS_TEST_WORKERS=0 runs it in one
# process.
workers="${SBTC_OPS_TEST_WORKERS:-3}"
parallel=()
[ "$workers" != 0 ] && parallel=(-n "$workers" --dist loadfile)
pytest -q "${parallel[@]}" -m "not docker" "$@" 2>&1 | tee "$main_log"
main_rc=${PIPESTATUS[0]}
set -e
docker_rc=0
wait "$docker_pid" || docker_rc=$?
echo "---- docker tests (pytest -m docker) ----"
cat "$docker_log"
echo "---- main tests (pytest -m 'not docker'), summary again ----"
tail -n 1 "$main_log"
# 5 = nothing collected (e.g. arguments that select no docker test): not a failure.
[ "$main_rc" = 5 ] && main_rc=0
[ "$docker_rc" = 5 ] && docker_rc=0
if [ "$main_rc" != 0 ] || [ "$docker_rc" != 0 ]; then
  echo "tests failed: main group exit $main_rc, docker group exit $docker_rc" >&2
  exit 1
fi
