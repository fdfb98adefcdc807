#!/usr/bin/env bash
# Installs what racklb needs on a fresh Debian machine with Node 20, and nothing from elsewhere:
# Debian packages where missing, npm packages from the lockfile, then the TypeScript build.
#   scripts/ensure-deps.sh test   # what the test suite needs
#   scripts/ensure-deps.sh lab    # what the lab needs (root)
set -euo pipefail
cd "$(dirname "$0")/.."
purpose="${1:-test}"

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have redis-server || need+=(redis-server)
have gobgpd || need+=(gobgpd)
have bird || need+=(bird2)
have ip || need+=(iproute2)
[ -x /usr/lib/frr/bgpd ] || need+=(frr)
have openssl || need+=(openssl)
[ -f /usr/share/gocode/src/github.com/osrg/gobgp/api/gobgp.proto ] || need+=(golang-github-osrg-gobgp-dev)
# The browser test of `racklb inspect` drives Debian's Chromium (playwright-core, no bundled browser).
if [ "$purpose" = test ]; then [ -x /usr/bin/chromium ] || need+=(chromium); fi

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "racklb: missing Debian packages: ${need[*]}; run as root (or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "racklb: installing Debian packages: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
  }
  # The Debian package starts a system-wide redis-server; racklb's tests and lab start their own.
fi

# npm packages exactly as locked; skipped when node_modules already matches the lockfile.
stamp=node_modules/.racklb-lock-stamp
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  npm ci --no-audit --no-fund >&2
  cp package-lock.json "$stamp"
else
  npm run --silent build >&2
fi

if [ "$purpose" = lab ] && [ "$(id -u)" -ne 0 ]; then
  echo "racklb: the lab creates network namespaces and needs root: run it with sudo" >&2
  exit 1
fi
