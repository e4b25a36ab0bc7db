"""Shared setup of the monitoring tests: a champion in the registry, and rows it served."""

import datetime as dt

from mlops_assets.defs.keys import (
    dataset_key,
    features_key,
    model_evaluation_key,
    trained_model_key,
)
from mlops_assets.demo.simulator import simulate_batch
from mlops_assets.serving.predlog import PredictionLog, predictions_repository, store_committer
from mlops_assets.store.local import LocalStore
from mlops_assets.training.train import inputs, predictions
from mlops_assets_tests.test_training.conftest import server_env  # noqa: F401 - shared fixture


def serve_rows(env, spec, drift: str, rows: int, request_id: str = "req-1", seed: int = 0):
    """What the server would log: rows answered by the production version, as one request.
    Returns the simulated rows (with their true outcome)."""
    tracking = env.tracking()
    version = tracking.version_by_alias(spec.model_name, "production").version
    model = tracking.load_model(spec.model_name, version)
    frame = simulate_batch(spec.simulator, dt.date(2026, 11, 20), rows=rows, drift=drift, seed=seed)
    x = inputs(frame, spec)
    values = predictions(model, frame, spec)
    store = LocalStore(
        env.data_dir / "lakefs-local", predictions_repository(spec.dataset.repository)
    )
    log = PredictionLog(
        env.data_dir / "serving-log",
        commit=store_committer(lambda _: store, {spec.name: store.repository}),
    )
    columns = {c: [None if v != v else v for v in x[c].tolist()] for c in spec.features}
    log.append(
        spec.name,
        version,
        request_id,
        columns,
        {"prediction": model.predict(x).tolist(), "probability": values.tolist()},
    )
    log.close()
    return frame


def champion(env, days: int = 6, rows: int = 250):
    """Seed churn and train, gate and register its first (production) version."""
    spec = env.spec("churn")
    env.seed(spec, days=days, rows=rows)
    keys = [
        dataset_key("churn"),
        features_key("churn"),
        trained_model_key("churn"),
        model_evaluation_key("churn"),
    ]
    assert env.run(keys).success
    return spec
