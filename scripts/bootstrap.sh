#!/usr/bin/env bash
# Installs everything autocanary needs on a Debian machine, idempotently:
#   - the system packages the tests and the demo start privately (redis-server, prometheus),
#     and chromium for the dashboard's browser test,
#   - a Python 3.11+ virtual environment in .venv with the project and its test extras,
#     pinned by constraints.txt so that CI installs what the developers tested.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1mbootstrap:\033[0m %s\n' "$*"; }

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# kubectl against the sandbox, as against a cluster (tests/contract): Debian ships it as kubernetes-client.
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)
# The dashboard's browser test drives Debian's chromium through Playwright (no browser download).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# The failover test runs a primary, a replica and three Sentinels (tests/e2e/test_sentinel_failover.py).
command -v redis-sentinel >/dev/null 2>&1 || need_apt+=(redis-sentinel)

python_bin=""
for candidate in python3.11 python3.12 python3.13 python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    python_bin=$(command -v "$candidate"); break
  fi
done
if [ -z "$python_bin" ]; then need_apt+=(python3 python3-venv); fi
if [ -n "$python_bin" ] && ! "$python_bin" -c 'import venv, ensurepip' >/dev/null 2>&1; then need_apt+=(python3-venv); fi

if [ ${#need_apt[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: missing ${need_apt[*]} and no apt-get to install them; install them by hand" >&2
    exit 1
  fi
  log "installing system packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends keeps prometheus from pulling in the node exporter and its service.
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  [ -n "$python_bin" ] || python_bin=$(command -v python3)
fi

stamp=.venv/.installed
inputs_hash=$(cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs_hash" ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $python_bin ($("$python_bin" --version))"
  "$python_bin" -m venv .venv
fi
log "installing Python dependencies into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
constraints=()
[ -f constraints.txt ] && constraints=(-c constraints.txt)
# Bytecode is compiled at install on purpose: with PYTHONDONTWRITEBYTECODE set (as on CI machines)
# Python would otherwise compile every import again in each of the many processes the tests start.
.venv/bin/python -m pip install -q --disable-pip-version-check "${constraints[@]}" -e '.[test]'
echo "$inputs_hash" > "$stamp"
log "ready"
