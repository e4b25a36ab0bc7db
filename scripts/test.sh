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
# Two workers, a test module each at a time (--dist loadfile keeps a module's fixtures in one
# process): on 2 cores the suite takes about 10 minutes instead of 15.5, as much of it waits on
# servers, the daemon and the browser.
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
