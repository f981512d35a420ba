#!/usr/bin/env bash
# The test command: installs what the tests need (a venv with the dev extra, and a real
# redis-server when the machine has none), then runs pytest on four workers (pytest-xdist).
# Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "threadteam needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
  exit 2
fi

if ! command -v redis-server >/dev/null 2>&1 && [ -z "${REDIS_URL:-}" ]; then
  echo "Installing redis-server: the tests use a real Redis." >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq && $sudo apt-get install -y -qq redis-server >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
# Tests wait on sockets and subprocesses far more than they compute: four workers keep a
# two-core machine busy. PYTEST_WORKERS=0 runs them in this process.
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-4}" "$@"
