# syntax=docker/dockerfile:1.7
# One image for every role; each role is a different command. Build:
#   docker build --build-arg VCS_REF="$(git rev-parse HEAD)" -t mlops-assets .
#   user code : (default CMD) dagster code-server start -h 0.0.0.0 -p 4000 -m mlops_assets.definitions
#   webserver : dagster-webserver -h 0.0.0.0 -p 3000 -w workspace.yaml
#   daemon    : dagster-daemon run -w workspace.yaml
#   serving   : mlops serve --host 0.0.0.0 --port 8080
#   tracking  : mlflow server --host 0.0.0.0 --port 5000 --backend-store-uri postgresql+psycopg2://… --artifacts-destination s3://…
# The Dagster instance config comes from MLOPS_ENV (mlops-entrypoint below, which asks
# mlops_assets/instance.py): `embedded`, the default, is dagster.yaml (SQLite); `production` is
# deploy/dagster/dagster.production.yaml (Postgres, K8sRunLauncher). A file provided at
# $DAGSTER_HOME/dagster.yaml (a Kubernetes ConfigMap, a compose config) wins over both.
# The HEALTHCHECK is the code server's; the other roles declare their own (docker-compose.yml,
# Kubernetes probes).
FROM python:3.11.7-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/home \
    MLOPS_DATA_DIR=/opt/dagster/data \
    MLOPS_ENV=embedded

# tini as PID 1: a process running as PID 1 gets no default signal actions, so a command that
# installs no SIGTERM handler would ignore `docker stop` or a pod's termination and be SIGKILLed
# after the grace period; and the code server's run workers and step processes, once orphaned,
# would never be reaped. `tini -g` forwards signals to the command's whole process group and
# reaps zombies. In the image rather than `docker run --init`, which Kubernetes does not have.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/mlops_assets

# Dependencies first, from the lock file, so a source change does not reinstall them.
COPY requirements.lock ./
RUN pip install --no-cache-dir uv==0.13.9 \
 && uv pip install --system --no-cache --compile-bytecode -r requirements.lock

# Points $DAGSTER_HOME/dagster.yaml at the instance config of MLOPS_ENV (instance.py decides
# which file and refuses an unknown name), then runs the role's command. A symlink into this
# folder is ours and is re-pointed on every start; anything else there was provided (a mounted
# file, a ConfigMap) and is left alone.
COPY --chmod=0755 <<'EOF' /usr/local/bin/mlops-entrypoint
#!/bin/sh
set -eu
config="$(python - <<'PY'
import sys

from mlops_assets.instance import instance_config_file, missing_env

try:
    print(instance_config_file())
except (ValueError, FileNotFoundError) as e:
    sys.exit(f"mlops-entrypoint: {e}")
if missing := missing_env():
    print(f"mlops-entrypoint: warning: the instance config reads {', '.join(missing)}: unset",
          file=sys.stderr)
PY
)"
target="$DAGSTER_HOME/dagster.yaml"
ours=false
if [ -L "$target" ]; then
  case "$(readlink "$target")" in "$PWD"/*) ours=true ;; esac
fi
if [ -e "$target" ] && [ "$ours" = false ]; then
  echo "mlops-entrypoint: Dagster instance config $target (provided; MLOPS_ENV not applied)" >&2
else
  mkdir -p "$DAGSTER_HOME"
  ln -sfn "$config" "$target"
  echo "mlops-entrypoint: Dagster instance config $config (MLOPS_ENV=${MLOPS_ENV:-})" >&2
fi
exec "$@"
EOF

# Then the project itself (no dependency resolution: the lock already installed them).
COPY setup.py pyproject.toml workspace.yaml dagster.yaml README.md MLproject ./
COPY deploy/dagster ./deploy/dagster
COPY mlops_assets ./mlops_assets
# compileall: the image runs as a user that cannot write __pycache__ there, so without it every
# process (code server, each run pod, the inference server) compiles the package from source.
RUN uv pip install --system --no-cache --no-deps -e . \
 && python -m compileall -q mlops_assets \
 && groupadd --gid 10001 mlops \
 && useradd --create-home --uid 10001 --gid 10001 mlops \
 && mkdir -p "$DAGSTER_HOME" "$MLOPS_DATA_DIR" \
 && chown -R mlops:mlops "$DAGSTER_HOME" "$MLOPS_DATA_DIR"

# Numeric, so that Kubernetes can verify runAsNonRoot.
USER 10001:10001
EXPOSE 4000 3000 8080 5000

HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD dagster api grpc-health-check -p 4000 || exit 1

ENTRYPOINT ["tini", "-g", "--", "mlops-entrypoint"]
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "mlops_assets.definitions"]

# Last, so that a new revision does not invalidate the layers above.
ARG VCS_REF=unknown
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="mlops-assets" \
      org.opencontainers.image.description="Dagster code location, webserver, daemon and inference server of the ML lifecycle" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${VCS_REF}"
