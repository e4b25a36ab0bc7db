#!/usr/bin/env bash
# Benchmark the inference server against MLServer and `mlflow models serve` on the same model,
# in the same run; prints a table. Installs wrk (Debian) and, in .venv-bench, MLServer with
# the same scikit-learn, numpy and pandas as the project (MLServer pins an older Starlette,
# so it cannot share the project's environment). uvloop stays below 0.22: MLServer 1.7.1's
# parallel inference workers call asyncio.get_event_loop() before creating a loop, which
# uvloop 0.22 refuses, so every worker dies at start.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! command -v wrk > /dev/null; then
  echo "bench: installing wrk"
  (apt-get install -y wrk > /dev/null 2>&1) || (apt-get update > /dev/null && apt-get install -y wrk > /dev/null)
fi
pin() { grep -E "^$1==" requirements.lock; }
if [ ! -x .venv-bench/bin/mlserver ] || ! .venv-bench/bin/python -c \
  'import sys, uvloop; sys.exit(tuple(map(int, uvloop.__version__.split(".")[:2])) >= (0, 22))' 2>/dev/null; then
  echo "bench: installing MLServer into .venv-bench"
  python3.11 -m venv .venv-bench
  .venv/bin/uv pip install --python .venv-bench/bin/python --compile-bytecode -q \
    "mlserver==1.7.1" "mlserver-sklearn==1.7.1" \
    "uvloop<0.22" "$(pin scikit-learn)" "$(pin numpy)" "$(pin pandas)" "$(pin scipy)" "$(pin joblib)"
fi
exec .venv/bin/python -m benchmarks.serving "$@"
