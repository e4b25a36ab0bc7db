#!/usr/bin/env bash
# Set up and run every check CI runs: lint, format, type check, tests. Extra arguments go to
# pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/test-deps.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy  # the product package; settings in pyproject.toml
# Under faketime (scripts/test-on-date.sh, or `faketime DATE scripts/test.sh`), Python's timed
# lock waits would never end (see scripts/faketime/sem_clockwait.c): preload the small fix first.
if [[ "${LD_PRELOAD:-}" == *libfaketime* && "${LD_PRELOAD}" != *libsemclockwait* ]]; then
  command -v gcc >/dev/null || { echo "test.sh: under faketime the suite needs gcc (apt-get install gcc)" >&2; exit 1; }
  mkdir -p .venv/faketime
  gcc -shared -fPIC -O2 -o .venv/faketime/libsemclockwait.so scripts/faketime/sem_clockwait.c
  export LD_PRELOAD="$PWD/.venv/faketime/libsemclockwait.so:$LD_PRELOAD"
fi
# Two workers, a test module each at a time (--dist loadfile keeps a module's fixtures in one
# process): much of the suite waits on servers, the daemon and the browser, so two workers on
# 2 cores finish it in about 18 minutes.
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
