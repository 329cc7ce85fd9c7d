#!/usr/bin/env bash
# Sets up a fresh machine for development and tests. Idempotent; run it again after pulling.
#  1. Debian packages the tests start for real: OpenSSH server (SFTP delivery), Redis (shared rate limits),
#     PostgreSQL (shared gateway store), Prometheus (its promtool and a real scrape of the gateway), Chromium
#     (headless, for the console), cloud-init (its own schema check of the user-data we render), iproute2 and
#     iptables (the DigitalOcean twin's droplets are network namespaces), and a C++ toolchain for llama.cpp.
#  2. A virtualenv (.venv) with the package and its dev tools.
#  3. llama.cpp's llama-server, built from source once per version into ~/.cache/agentcloud (about 7 minutes
#     the first time on 2 cores; instant afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(openssh-server redis-server postgresql prometheus chromium cloud-init iproute2 iptables cmake g++ make)

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "warning: missing Debian packages (${missing[*]}); tests that need them are skipped" >&2
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'

# llama.cpp's llama-server for the gateway's real-engine tests: built once, cached outside the repo by version.
llama_server=""
if command -v cmake >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1; then
  llama_server="$(PYTHON=.venv/bin/python bash scripts/build-llama-server.sh)"
else
  echo "warning: no cmake/g++; llama.cpp tests are skipped" >&2
fi

# Where setup had root and every package, the end-to-end tests on the DigitalOcean twin (marker e2e) can run:
# from then on a skipped e2e test is a failure (tests/conftest.py), so CI never skips them silently.
rm -f .venv/e2e-required
if [ "$(id -u)" -eq 0 ] && [ -x "$llama_server" ] && command -v ip >/dev/null 2>&1 \
   && command -v iptables >/dev/null 2>&1 && { command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; }; then
  touch .venv/e2e-required
fi
echo "setup done; run the tests with: .venv/bin/python -m pytest"
