#!/usr/bin/env bash
# Set up, seed the versioned data store with demo data, train and gate the demo models on the
# first start, then run the inference server (http://127.0.0.1:8080) and Dagster (webserver +
# daemon, UI at http://127.0.0.1:3000) on the embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
mkdir -p "$DAGSTER_HOME"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"
export MLOPS_SERVING_PORT="${MLOPS_SERVING_PORT:-8080}"
# The demo commits the prediction log every 10 s (production default: 60 s), so drift and
# live performance are re-computed within seconds of traffic.
export MLOPS_LOG_SEGMENT_SECONDS="${MLOPS_LOG_SEGMENT_SECONDS:-10}"

# The demo data ends yesterday; MLOPS_DEMO_END=YYYY-MM-DD pins its last day (the tests do).
.venv/bin/mlops seed ${MLOPS_DEMO_END:+--end "$MLOPS_DEMO_END"}
if [ ! -f "$DAGSTER_HOME/.demo-trained" ]; then
  training_log="$DAGSTER_HOME/first-training.log"
  echo "run: first start: training and gating the demo models (about a minute)"
  if ! .venv/bin/dagster asset materialize -m mlops_assets.definitions \
      --select '+group:"training"' > "$training_log" 2>&1; then
    echo "run: FIRST TRAINING DID NOT SUCCEED; its full log is $training_log"
  fi
  # Says, per model, which version is in production, or plainly why none is (the gate's reason).
  if .venv/bin/mlops ready --log "$training_log"; then
    touch "$DAGSTER_HOME/.demo-trained"
  else
    echo "run: the server starts anyway: it answers 503 for a model with no production version,"
    echo "run: and serves one as soon as a version passes the gate (the next start retrains)"
  fi
fi

.venv/bin/mlops serve --host 127.0.0.1 --port "$MLOPS_SERVING_PORT" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
echo "run: inference server on http://127.0.0.1:$MLOPS_SERVING_PORT (POST /predict, /v2/...)"
echo "run: starting dagster dev; open http://${DAGSTER_HOST:-127.0.0.1}:${DAGSTER_PORT:-3000}"
.venv/bin/dagster dev -w workspace.yaml \
  --host "${DAGSTER_HOST:-127.0.0.1}" --port "${DAGSTER_PORT:-3000}"
