#!/usr/bin/env bash
# Soak the embedded store in the prediction log's pattern: 10,000 commits (by default) of one
# new segment each, keeping every earlier one; prints disk, commit and read latency for the
# first and last 10 % and their late/early ratios. `--layout full-tree` runs the store as it
# was before content-addressed trees, for comparison (use fewer commits: it grows
# quadratically). Other flags: see `python -m benchmarks.store --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m benchmarks.store "$@"
