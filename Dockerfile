# One image for every role: user code (default), webserver, daemon and the inference server —
# each is a different command. Build: docker build -t mlops-assets .
#   user code : (default CMD) dagster code-server on :4000
#   webserver : dagster-webserver -h 0.0.0.0 -p 3000 -w workspace.yaml
#   daemon    : dagster-daemon run -w workspace.yaml
#   serving   : mlops serve --host 0.0.0.0 --port 8080   (MLFLOW_TRACKING_URI, MLOPS_SERVING_TOKEN)
FROM python:3.11.7-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/home \
    MLOPS_DATA_DIR=/opt/dagster/data

WORKDIR /opt/mlops_assets

# Dependencies first, from the lock file, so a source change does not reinstall them.
COPY requirements.lock ./
RUN pip install --no-cache-dir uv==0.13.9 \
 && uv pip install --system --no-cache --compile-bytecode -r requirements.lock

# Then the project itself (no dependency resolution: the lock already installed them).
COPY setup.py pyproject.toml workspace.yaml dagster.yaml README.md MLproject ./
COPY mlops_assets ./mlops_assets
RUN uv pip install --system --no-cache --no-deps -e . \
 && useradd --create-home --uid 10001 mlops \
 && mkdir -p "$DAGSTER_HOME" "$MLOPS_DATA_DIR" \
 && cp dagster.yaml "$DAGSTER_HOME/dagster.yaml" \
 && chown -R mlops:mlops "$DAGSTER_HOME" "$MLOPS_DATA_DIR"

USER mlops
EXPOSE 4000 3000 8080

HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD dagster api grpc-health-check -p 4000 || exit 1

CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "mlops_assets.definitions"]
