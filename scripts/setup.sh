#!/usr/bin/env bash
# Create .venv and install the pinned environment (requirements.lock) with uv. Idempotent:
# skips the install when the lock file and setup.py are unchanged since the last one.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: Python 3.11 is required; found $("$PYTHON" --version 2>&1) at $PYTHON." >&2
  echo "setup: install Python 3.11 or point PYTHON at it." >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
if [ ! -x .venv/bin/uv ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check uv
fi

stamp="$(cat requirements.lock setup.py | sha256sum | cut -c1-16)"
if [ "$(cat .venv/.installed 2>/dev/null || true)" != "$stamp" ]; then
  echo "setup: installing the locked dependencies (uv)"
  # --compile-bytecode: PYTHONDONTWRITEBYTECODE may be set, and imports are twice as slow
  # without .pyc files.
  .venv/bin/uv pip install --quiet --python .venv/bin/python --compile-bytecode \
    -r requirements.lock -e '.[test]'
  echo "$stamp" > .venv/.installed
fi
# Our own modules too, on every setup (only changed files are compiled): with
# PYTHONDONTWRITEBYTECODE set, every process (the code server, each run, the inference server)
# would otherwise compile them from source again, about 0.3 s each.
.venv/bin/python -m compileall -q -j 0 mlops_assets > /dev/null
