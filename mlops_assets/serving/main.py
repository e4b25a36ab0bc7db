"""``mlops serve``: run the inference server for every model spec under uvicorn.

The server loads each model's ``production`` version from the MLflow registry (embedded
SQLite store or MLFLOW_TRACKING_URI) and reconciles to the registry's desired state every
``--poll-seconds`` (the alias and the rollout tag, shared by every replica: see
``serving/reconcile.py``), so a promotion or a canary shows up without a restart. Admin
routes need a token: ``MLOPS_SERVING_TOKEN`` from the environment, or, if it is unset, a
random token the server writes to ``$MLOPS_DATA_DIR/serving/token`` (mode 0600) for local
clients such as the embedded ``deployment`` asset.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
from pathlib import Path

from mlops_assets.settings import Settings
from mlops_assets.specs import ModelSpec, load_specs


def resolve_token(settings: Settings) -> str:
    """MLOPS_SERVING_TOKEN, or a random token kept in a 0600 file for local clients."""
    if settings.serving_token:
        return settings.serving_token
    path = settings.serving_token_file
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


def build_server(
    poll_seconds: float = 2.0, log_dir: Path | None = None, settings: Settings | None = None
):
    from mlops_assets.serving.app import InferenceServer
    from mlops_assets.serving.predlog import (
        PredictionLog,
        predictions_repository,
        store_committer,
    )
    from mlops_assets.serving.reconcile import Desired
    from mlops_assets.store import open_store
    from mlops_assets.training.tracking import tracking_from_env

    settings = settings or Settings.from_env()
    specs = list(load_specs(settings.specs_dir))
    tracking = tracking_from_env(settings)
    tracking.configure()

    def load_version(spec: ModelSpec, version: str):
        # ONNX Runtime where the gate verified the version's ONNX graph, else the skops model
        from mlops_assets.serving.compiled import load_for_serving
        from mlops_assets.training.pipeline import spec_types

        return load_for_serving(tracking, spec.model_name, version, trusted=spec_types(spec))[0]

    def resolve_production(spec: ModelSpec) -> Desired:
        # the alias and the rollout tag in one registry call: the state every replica shares
        return Desired.from_registry(*tracking.model_state(spec.model_name))

    repos = {s.name: predictions_repository(s.dataset.repository) for s in specs}
    options = settings.store_options()

    def open_repository(repo: str):
        return open_store(settings.data_backend, repo, **options)

    plog = PredictionLog(
        log_dir or settings.data_dir / "serving" / "prediction-log",
        commit=store_committer(open_repository, repos),
        segment_rows=settings.log_segment_rows,
        segment_seconds=settings.log_segment_seconds,
        models=tuple(s.name for s in specs),
    )
    return InferenceServer(
        specs,
        load_version,
        resolve_token(settings),
        prediction_log=plog,
        # a Desired, not a bare version: the server reconciles to it (serving/reconcile.py)
        resolve_production=resolve_production,  # type: ignore[arg-type]
        poll_seconds=poll_seconds,
    )


def serve(host: str, port: int, poll_seconds: float) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for sig in (signal.SIGINT, signal.SIGTERM):  # may be inherited as ignored
        signal.signal(sig, signal.SIG_DFL)
    app = build_server(poll_seconds)
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=30,
    )
