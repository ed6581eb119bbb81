#!/usr/bin/env bash
# Installs the monitor into a virtual environment of its own (.venv beside this repository), so it
# works on a fresh Debian 12 / Ubuntu 24.04 whose system Python is "externally managed" (PEP 668),
# and equally with a pyenv or conda Python first on PATH.
#
#   bash scripts/install.sh            # the monitor alone
#   bash scripts/install.sh test       # with the test extras (what scripts/test.sh uses)
#
# Debian packages it needs are installed with apt when missing (python3-venv; more with APT_PACKAGES).
# Safe to run again: an existing .venv is reused and only what changed is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
EXTRAS="${1:-}"

apt_install() {
    [ $# -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "== apt-get install $*" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    echo "error: $PY is missing or older than Python 3.11; set PYTHON=/path/to/python3.11+" >&2
    exit 2
fi

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$VENV"
    if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
        # Debian and Ubuntu ship venv's ensurepip in a separate package.
        rm -rf "$VENV"
        ver="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        apt_install python3-venv "python${ver}-venv"
        "$PY" -m venv "$VENV"
    fi
fi

# shellcheck disable=SC2086
[ -n "${APT_PACKAGES:-}" ] && apt_install ${APT_PACKAGES}

spec="."
[ -n "$EXTRAS" ] && spec=".[$EXTRAS]"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec" 2>&1 \
    | { grep -v -E "^WARNING: (Location '|Running pip as)" || true; }
# Detection's compiled kernels (numba: the trend fit and the breach forecast) are compiled here once
# and cached beside their module (monitor/detect/__pycache__), so that no command, test or daemon
# start pays the compile (about 8 s of CPU); a process then only loads them (about 0.3 s, on its
# first trend fit).
"$VENV/bin/python" -c "from monitor.detect.forecast import warm_up_compiled; warm_up_compiled()"
echo "== installed into $VENV ($("$VENV/bin/python" --version))" >&2
