#!/usr/bin/env bash
# Benchmark the closed loop: from "drifted commit lands" to "retrained model takes all
# traffic", with the real daemon and inference server on a temporary DAGSTER_HOME; prints a
# table (median of --rounds, default 3) and the code location's load time vs an empty one.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m benchmarks.loop "$@"
