#!/usr/bin/env bash
# Set up, seed the versioned data store with demo data, and start Dagster (webserver + daemon)
# on the embedded defaults: UI at http://127.0.0.1:3000.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
mkdir -p "$DAGSTER_HOME"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"

.venv/bin/mlops seed
echo "run: starting dagster dev; open http://${DAGSTER_HOST:-127.0.0.1}:${DAGSTER_PORT:-3000}"
exec .venv/bin/dagster dev -w workspace.yaml \
  --host "${DAGSTER_HOST:-127.0.0.1}" --port "${DAGSTER_PORT:-3000}"
