#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine, then runs the whole suite:
# the package with its test extras in .venv (scripts/install.sh), and the real servers the tests
# start themselves (mosquitto, victoria-metrics, chromium, prometheus, postgresql: the tests run their own
# throwaway clusters with initdb/pg_ctl, the Debian service itself is not used). Safe to run again; installs are
# skipped when present. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v victoria-metrics >/dev/null 2>&1 || need_apt+=(victoria-metrics)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
APT_PACKAGES="${need_apt[*]:-}" bash scripts/install.sh test
# node-opcua, an independent OPC UA implementation for the interop tests (tests/opcua/node)
if [ ! -d tests/opcua/node/node_modules/node-opcua-server ]; then
    echo "== npm install (tests/opcua/node)" >&2
    npm install --prefix tests/opcua/node --no-audit --no-fund --no-package-lock --loglevel=error >/dev/null
fi

PY=.venv/bin/python
echo "== ruff"; $PY -m ruff check monitor adapters tests bench
echo "== ruff format"; $PY -m ruff format --check monitor adapters tests bench
echo "== mypy"; $PY -m mypy
echo "== pytest"; $PY -m pytest "$@"
