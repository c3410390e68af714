#!/usr/bin/env bash
# Run Freshet's end-to-end conformance suite (tests/e2e) with real clients.
#
#   scripts/e2e.sh [pytest args...]
#
# Environment:
#   FRESHET_BIN         server binary to start (default target/debug/freshet)
#   FRESHET_ENDPOINT    use an already running server instead, e.g. http://127.0.0.1:4567
#   FRESHET_KINESALITE  set to 1 when FRESHET_ENDPOINT is kinesalite (skips what it lacks)
#   E2E_VENV            virtualenv to create/update (default .venv)
#   E2E_WORKERS         pytest-xdist workers for the test files (default 2; 1 runs
#                       them in one process). Each worker starts its own shared
#                       server; a file's tests always run together on one worker.
#
# The exit code is pytest's.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1

VENV="${E2E_VENV:-$ROOT/.venv}"
REQS="$ROOT/tests/e2e/requirements.txt"
export FRESHET_BIN="${FRESHET_BIN:-target/debug/freshet}"

PYTHON3="$(command -v python3 || true)"
if [ -z "$PYTHON3" ]; then
    echo "e2e.sh: python3 is required" >&2
    exit 2
fi

make_venv() {
    "$PYTHON3" -m venv "$VENV" >/dev/null 2>&1
}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    if ! make_venv; then
        # Debian/Ubuntu ship venv (and ensurepip) separately.
        rm -rf "$VENV"
        if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
            echo "e2e.sh: python3 -m venv failed; installing python3-venv" >&2
            export DEBIAN_FRONTEND=noninteractive
            apt-get install -y -q python3-venv >/dev/null 2>&1 || {
                apt-get update -q >/dev/null 2>&1
                apt-get install -y -q python3-venv >/dev/null
            }
            make_venv || { echo "e2e.sh: cannot create a virtualenv at $VENV" >&2; exit 2; }
        else
            echo "e2e.sh: python3 -m venv failed; install python3-venv (as root: apt-get install -y python3-venv)" >&2
            exit 2
        fi
    fi
fi

# Install or update the pinned requirements, only when they changed.
STAMP="$VENV/.e2e-requirements.sha256"
WANT="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS" || {
        echo "e2e.sh: pip install -r $REQS failed" >&2
        exit 2
    }
    echo "$WANT" > "$STAMP"
fi

# playwright-core for the console's browser tests (tests/browser), pinned by its lock file.
if [ ! -d "$ROOT/tests/browser/node_modules/playwright-core" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "e2e.sh: npm is required for the browser tests (run scripts/deps.sh test)" >&2
        exit 2
    fi
    NPM_LOG="$(mktemp)"
    if ! npm ci --prefix "$ROOT/tests/browser" --no-audit --no-fund --loglevel=error >"$NPM_LOG" 2>&1; then
        cat "$NPM_LOG" >&2
        rm -f "$NPM_LOG"
        echo "e2e.sh: npm ci --prefix tests/browser failed" >&2
        exit 2
    fi
    rm -f "$NPM_LOG"
fi

if [ -z "${FRESHET_ENDPOINT:-}" ] && [ ! -x "$FRESHET_BIN" ]; then
    echo "e2e.sh: warning: $FRESHET_BIN does not exist or is not executable (run cargo build, or set FRESHET_BIN / FRESHET_ENDPOINT)" >&2
fi

# Run the whole suite unless the arguments name test files or directories.
TARGETS=("$ROOT/tests/e2e")
for arg in "$@"; do
    case "$arg" in
        -*) ;;
        *) if [ -e "${arg%%::*}" ]; then TARGETS=(); break; fi ;;
    esac
done

# Independent files run in parallel (--dist loadfile keeps each file on one worker, so
# module fixtures and a file's ordering assumptions hold), unless the caller chose -n.
PARALLEL=()
WORKERS="${E2E_WORKERS:-2}"
case " $* " in
    *" -n "*|*" -n="*|*" --numprocesses"*) ;;
    *) if [ "$WORKERS" -gt 1 ] 2>/dev/null; then PARALLEL=(-n "$WORKERS" --dist loadfile); fi ;;
esac

"$VENV/bin/python" -m pytest -p no:cacheprovider "${PARALLEL[@]}" "${TARGETS[@]}" "$@"
exit $?
