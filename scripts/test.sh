#!/usr/bin/env bash
# Installs everything the test suite needs, then runs it: ruff, mypy and pytest.
# Safe to run again; on a fresh Debian machine it needs root (apt-get) — CI runs it as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# The venv lives under /opt (world-traversable) because the PostgreSQL servers the tests start
# must run as an unprivileged user that can read the embedded PostgreSQL binaries in it.
VENV="${SBTC_OPS_TEST_VENV:-/opt/sbtc-ops-test-venv}"
DEBIAN_PACKAGES=(nftables iproute2 prometheus chromium openssh-server procps)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "warning: missing Debian packages (${missing[*]}); the tests that need them will be skipped" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test]'

LINT_PATHS=(src tests)
[ -d bench ] && LINT_PATHS+=(bench)
"$VENV/bin/ruff" check "${LINT_PATHS[@]}"
"$VENV/bin/ruff" format --check "${LINT_PATHS[@]}"
"$VENV/bin/mypy"
PATH="$VENV/bin:$PATH" "$VENV/bin/pytest" -q "$@"
