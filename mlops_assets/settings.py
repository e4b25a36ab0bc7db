"""Every switch the platform reads, in one place, with its default for each environment.

No other module of the product reads the environment (a test enforces it): entry points (the
code location, ``mlops``, ``mlops serve``, ``mlflow run``) call :meth:`Settings.from_env` and
hand what they need down. Nothing here does work at import.

| switch                       | embedded default               | production                |
|------------------------------|--------------------------------|---------------------------|
| MLOPS_ENV                    | ``embedded`` (unset)           | ``production``            |
| MLOPS_DATA_BACKEND           | ``local`` store on disk        | ``lakefs`` server         |
| MLOPS_DATA_DIR               | $DAGSTER_HOME/mlops-data       | a volume                  |
| LAKEFS_ENDPOINT, _ACCESS_KEY_ID, _SECRET_ACCESS_KEY, _STORAGE_NAMESPACE | - | lakeFS   |
| MLFLOW_TRACKING_URI          | SQLite + local artifacts       | MLflow tracking server    |
| MLFLOW_UI_URL                | http://127.0.0.1:5000          | the server's UI           |
| MLOPS_SPECS_DIR              | the packaged specs             | your specs                |
| MLOPS_EXECUTOR               | ``in_process``                 | ``k8s``                   |
| MLOPS_SERVING_URL / _PORT    | http://127.0.0.1:8080          | the Service's URL         |
| MLOPS_SERVING_TOKEN          | a random token in a 0600 file  | a Secret                  |
| MLOPS_SERVING_REPLICAS       | unset: MLOPS_SERVING_URL alone | ``dns+http://mlops-       |
|                              | (comma-separated URLs; ``dns+``| inference-replicas:8080`` |
|                              | resolves every address)        | (a headless Service)      |
| MLOPS_PROMETHEUS_URL         | unset: read replicas directly  | the Prometheus server     |
|                              |                                | (wins over the replicas)  |
| MLOPS_PROMETHEUS_SELECTOR    | ``job="mlops-inference"``      | the replicas' scrape job  |
| MLOPS_ROLLOUT_LEASE_SECONDS  | 60                             | 60                        |
| MLOPS_LOG_SEGMENT_ROWS / _SECONDS | 5000 rows / 60 s          | 5000 rows / 60 s          |
| MLOPS_LOG_RETENTION_DAYS     | 30 (raw segments kept beside  | 30                        |
|                              | their compacted Parquet)       |                           |
| MLOPS_REPLAY_HOLDOUT         | on (the demo has no clients)   | **off** (replayed rows    |
|                              |                                | would reach monitoring)   |
| MLOPS_COMMITTER              | the OS user                    | the pod's identity        |
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

EMBEDDED = "embedded"
PRODUCTION = "production"
ENVIRONMENTS = (EMBEDDED, PRODUCTION)
EXECUTORS = ("in_process", "multiprocess", "k8s")
LAKEFS_VARS = ("LAKEFS_ENDPOINT", "LAKEFS_ACCESS_KEY_ID", "LAKEFS_SECRET_ACCESS_KEY")
# What the production Dagster instance file reads from the environment (its storage section).
PRODUCTION_INSTANCE_VARS = (
    "DAGSTER_PG_USERNAME",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_DB",
    "DAGSTER_PG_PORT",
)
EMBEDDED_MLFLOW_UI = "http://127.0.0.1:5000"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class SettingsError(ValueError):
    """A switch has a value the platform cannot use; the message names it and the choices."""


def _choice(environ: Mapping[str, str], var: str, choices: tuple[str, ...], default: str) -> str:
    raw = environ.get(var, "")
    name = raw.strip().lower().replace("-", "_") or default
    if name not in choices:
        raise SettingsError(
            f"{var}={raw!r} is not supported: use one of {', '.join(map(repr, choices))} "
            f"(unset means {default!r})"
        )
    return name


def _flag(environ: Mapping[str, str], var: str, default: bool) -> bool:
    raw = environ.get(var, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE or raw in _FALSE:
        return raw in _TRUE
    raise SettingsError(f"{var}={raw!r} is not a switch: use true or false")


def _number(environ: Mapping[str, str], var: str, default: float, kind=float):
    raw = environ.get(var, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{var}={raw!r} is not a {kind.__name__}") from None
    if value <= 0:
        raise SettingsError(f"{var}={raw!r} must be greater than 0")
    return value


def _retention_days(e: Mapping[str, str]) -> int:
    """MLOPS_LOG_RETENTION_DAYS: 0 is allowed (raw segments go once compacted)."""
    raw = e.get("MLOPS_LOG_RETENTION_DAYS", "").strip()
    if not raw:
        return 30
    if not raw.isdigit():
        raise SettingsError(
            f"MLOPS_LOG_RETENTION_DAYS={raw!r} is not a number of days: give 0 or more"
        )
    return int(raw)


@dataclass(frozen=True)
class Settings:
    """The platform's configuration, read once from the environment by an entry point."""

    env: str = EMBEDDED
    dagster_home: Path | None = None
    data_backend: str = "local"
    data_dir: Path = Path(".mlops-data")
    lakefs_endpoint: str = ""
    lakefs_access_key_id: str = ""
    lakefs_secret_access_key: str = ""
    lakefs_storage_namespace: str = ""
    tracking_uri: str | None = None
    mlflow_ui_url: str = EMBEDDED_MLFLOW_UI
    specs_dir: str | None = None
    executor: str = "in_process"
    serving_url: str | None = None
    serving_port: int = 8080
    serving_token: str = ""
    # Where a rollout reads every replica's figures: their URLs (or ``dns+`` names to
    # resolve), or a Prometheus server that scrapes them (production).
    serving_replicas: tuple[str, ...] = ()
    prometheus_url: str = ""
    prometheus_selector: str = 'job="mlops-inference"'
    rollout_lease_seconds: float = 60.0
    log_segment_rows: int = 5000
    log_segment_seconds: float = 60.0
    log_retention_days: int = 30
    replay_holdout: bool = True
    committer: str = ""
    mlflow_run_id: str | None = None  # set by `mlflow run` for the run it started

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Every switch, from ``environ`` (default: this process's environment)."""
        e = os.environ if environ is None else environ
        env = _choice(e, "MLOPS_ENV", ENVIRONMENTS, EMBEDDED)
        home = Path(e["DAGSTER_HOME"]).expanduser().resolve() if e.get("DAGSTER_HOME") else None
        if e.get("MLOPS_DATA_DIR"):
            data_dir = Path(e["MLOPS_DATA_DIR"]).expanduser().resolve()
        else:
            data_dir = home / "mlops-data" if home else Path(".mlops-data").resolve()
        tracking_uri = e.get("MLFLOW_TRACKING_URI", "").strip() or None
        return cls(
            env=env,
            dagster_home=home,
            data_backend=_choice(e, "MLOPS_DATA_BACKEND", ("local", "lakefs"), "local"),
            data_dir=data_dir,
            lakefs_endpoint=e.get("LAKEFS_ENDPOINT", ""),
            lakefs_access_key_id=e.get("LAKEFS_ACCESS_KEY_ID", ""),
            lakefs_secret_access_key=e.get("LAKEFS_SECRET_ACCESS_KEY", ""),
            lakefs_storage_namespace=e.get("LAKEFS_STORAGE_NAMESPACE", ""),
            tracking_uri=tracking_uri,
            mlflow_ui_url=e.get("MLFLOW_UI_URL", "" if tracking_uri else EMBEDDED_MLFLOW_UI),
            specs_dir=e.get("MLOPS_SPECS_DIR") or None,
            executor=_choice(e, "MLOPS_EXECUTOR", EXECUTORS, "in_process"),
            serving_url=e.get("MLOPS_SERVING_URL", "").strip() or None,
            serving_port=int(_number(e, "MLOPS_SERVING_PORT", 8080, int)),
            serving_token=e.get("MLOPS_SERVING_TOKEN", ""),
            serving_replicas=tuple(
                u.strip() for u in e.get("MLOPS_SERVING_REPLICAS", "").split(",") if u.strip()
            ),
            prometheus_url=e.get("MLOPS_PROMETHEUS_URL", "").strip(),
            prometheus_selector=e.get("MLOPS_PROMETHEUS_SELECTOR", "").strip()
            or 'job="mlops-inference"',
            rollout_lease_seconds=float(_number(e, "MLOPS_ROLLOUT_LEASE_SECONDS", 60.0)),
            log_segment_rows=int(_number(e, "MLOPS_LOG_SEGMENT_ROWS", 5000, int)),
            log_segment_seconds=float(_number(e, "MLOPS_LOG_SEGMENT_SECONDS", 60.0)),
            log_retention_days=_retention_days(e),
            # Replaying the holdout through /predict is for a demo with no clients: in
            # production those rows would land in the prediction log as if they were traffic.
            replay_holdout=_flag(e, "MLOPS_REPLAY_HOLDOUT", env == EMBEDDED),
            committer=e.get("MLOPS_COMMITTER", ""),
            mlflow_run_id=e.get("MLFLOW_RUN_ID") or None,
        )

    # ---- derived ------------------------------------------------------------------------

    @property
    def store_root(self) -> Path:
        """The embedded versioned store's folder of repositories."""
        return self.data_dir / "lakefs-local"

    def store_options(self) -> dict[str, str]:
        """Keyword arguments of ``open_store`` for this backend."""
        if self.data_backend == "local":
            return {"root": str(self.store_root), "committer": self.commit_author}
        missing = [v for v in LAKEFS_VARS if not getattr(self, v.lower())]
        if missing:
            raise SettingsError(
                f"MLOPS_DATA_BACKEND=lakefs needs {', '.join(missing)}: set them to your "
                "lakeFS endpoint and access keys"
            )
        return {
            "endpoint": self.lakefs_endpoint,
            "access_key_id": self.lakefs_access_key_id,
            "secret_access_key": self.lakefs_secret_access_key,
            "storage_namespace": self.lakefs_storage_namespace,
        }

    def embedded_tracking(self) -> tuple[str, Path]:
        """The embedded MLflow store: a SQLite database and an artifact folder, no server."""
        root = self.data_dir / "mlflow"
        return f"sqlite:///{root / 'mlflow.db'}", root / "artifacts"

    @property
    def serving_base_url(self) -> str:
        """Where the inference server is: MLOPS_SERVING_URL, else the local port."""
        return self.serving_url or f"http://127.0.0.1:{self.serving_port}"

    @property
    def serving_token_file(self) -> Path:
        """Where a local ``mlops serve`` without MLOPS_SERVING_TOKEN keeps its random token."""
        return self.data_dir / "serving" / "token"

    @property
    def commit_author(self) -> str:
        return self.committer or getpass.getuser()


def export_mlflow_http(max_retries: int, backoff_seconds: int, timeout_seconds: float) -> None:
    """MLflow's HTTP client reads its retry policy from the environment (process-wide): the
    one place the platform writes it."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(max_retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(backoff_seconds)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(max(1, timeout_seconds)))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def environment_name(raw: str | None = None) -> str:
    """``raw`` (default: MLOPS_ENV) as an environment name; unset or empty is embedded."""
    environ = os.environ if raw is None else {"MLOPS_ENV": raw}
    return _choice(environ, "MLOPS_ENV", ENVIRONMENTS, EMBEDDED)


def unset(variables: tuple[str, ...], environ: Mapping[str, str] | None = None) -> list[str]:
    """Which of ``variables`` are not set (for config files that read them themselves)."""
    e = os.environ if environ is None else environ
    return [var for var in variables if not e.get(var)]


# Shorthands for callers that need one value (each reads the environment afresh, so a test
# that sets a variable sees it).


def data_backend() -> str:
    return Settings.from_env().data_backend


def data_dir() -> Path:
    """Where embedded state lives: the local data store, asset files, reports."""
    return Settings.from_env().data_dir


def store_root() -> Path:
    return Settings.from_env().store_root


def store_options_from_env() -> dict[str, str]:
    """Options for ``open_store`` outside Dagster (the CLI)."""
    return Settings.from_env().store_options()


def tracking_uri() -> str | None:
    """The MLflow tracking server, or None for the embedded store (no server)."""
    return Settings.from_env().tracking_uri


def embedded_tracking() -> tuple[str, Path]:
    return Settings.from_env().embedded_tracking()
