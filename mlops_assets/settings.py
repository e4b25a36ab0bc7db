"""The one place that decides the environment: embedded defaults or production services.

Each component has one switch (an environment variable); nothing here does work at import.

| component       | switch               | embedded default              | production            |
|-----------------|----------------------|-------------------------------|-----------------------|
| data versioning | MLOPS_DATA_BACKEND   | ``local`` store on disk       | ``lakefs`` server     |
| data directory  | MLOPS_DATA_DIR       | $DAGSTER_HOME/mlops-data      | a volume              |
| tracking        | MLFLOW_TRACKING_URI  | SQLite + local artifacts      | MLflow tracking server|
"""

from __future__ import annotations

import os
from pathlib import Path

LAKEFS_VARS = ("LAKEFS_ENDPOINT", "LAKEFS_ACCESS_KEY_ID", "LAKEFS_SECRET_ACCESS_KEY")


def data_backend() -> str:
    backend = os.environ.get("MLOPS_DATA_BACKEND", "local").strip().lower() or "local"
    if backend not in ("local", "lakefs"):
        raise ValueError(
            f"MLOPS_DATA_BACKEND={backend!r} is not supported: use 'local' (embedded) or 'lakefs'"
        )
    return backend


def data_dir() -> Path:
    """Where embedded state lives: the local data store, asset files, reports."""
    if os.environ.get("MLOPS_DATA_DIR"):
        return Path(os.environ["MLOPS_DATA_DIR"]).expanduser().resolve()
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"]).expanduser().resolve() / "mlops-data"
    return Path(".mlops-data").resolve()


def store_root() -> Path:
    return data_dir() / "lakefs-local"


def store_options_from_env() -> dict[str, str]:
    """Options for ``open_store`` outside Dagster (the CLI); Dagster uses dg.EnvVar."""
    if data_backend() == "local":
        return {"root": str(store_root())}
    missing = [v for v in LAKEFS_VARS if not os.environ.get(v)]
    if missing:
        raise ValueError(
            f"MLOPS_DATA_BACKEND=lakefs needs {', '.join(missing)}: set them to your lakeFS "
            "endpoint and access keys"
        )
    return {
        "endpoint": os.environ["LAKEFS_ENDPOINT"],
        "access_key_id": os.environ["LAKEFS_ACCESS_KEY_ID"],
        "secret_access_key": os.environ["LAKEFS_SECRET_ACCESS_KEY"],
        "storage_namespace": os.environ.get("LAKEFS_STORAGE_NAMESPACE", ""),
    }


def tracking_uri() -> str | None:
    """The MLflow tracking server, or None for the embedded store (no server)."""
    return os.environ.get("MLFLOW_TRACKING_URI", "").strip() or None


def embedded_tracking() -> tuple[str, Path]:
    """The embedded MLflow store: a SQLite database and an artifact folder, no server."""
    root = data_dir() / "mlflow"
    return f"sqlite:///{root / 'mlflow.db'}", root / "artifacts"


EMBEDDED_MLFLOW_UI = "http://127.0.0.1:5000"
