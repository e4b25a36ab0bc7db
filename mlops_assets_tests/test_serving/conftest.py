"""A real inference server (``mlops serve``) on loopback, serving versions registered in the
session's real MLflow server: a good champion, a good challenger, one that fails, one that is
slow and one whose predictions are shifted."""

import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlops_assets.featurize import build_features
from mlops_assets.quality import load_dataset
from mlops_assets.serving.client import ServingClient
from mlops_assets.specs.model import get_spec
from mlops_assets.store.local import LocalStore
from mlops_assets.training.train import records
from mlops_assets_tests.conftest import seed_store
from mlops_assets_tests.processes import BIN, free_port, start, stop, wait_until
from mlops_assets_tests.servers import server_env
from mlops_assets_tests.test_training.conftest import unique_specs

TOKEN = "test-admin-token"


@dataclass
class Registry:
    specs_dir: str
    data_dir: Path
    tracking_uri: str
    versions: dict  # (spec, role) -> version
    holdout: dict  # spec -> list of records


def _features(data_dir: Path, spec):
    store = LocalStore(data_dir / "lakefs-local", spec.dataset.repository)
    head = seed_store(store, spec, days=6, rows=250)
    files = {p: store.get(head, p) for p in store.list(head, spec.dataset.prefix)}
    dataset, _ = load_dataset(files, spec.dataset)
    return build_features(dataset, spec)


def _log(tracking, spec, features, params):
    import mlflow

    from mlops_assets.training.run import lineage_tags, train_and_log
    from mlops_assets.training.tracking import register

    mlflow.set_experiment(experiment_id=tracking.ensure_experiment(spec))
    tags = lineage_tags(spec, params, "test-commit", spec.dataset.repository)
    with mlflow.start_run() as run:
        logged = train_and_log(tracking, spec, features, params, tags)
    return register(tracking, spec.model_name, logged.model_uri, run.info.run_id, tags).version


def _faulty(tracking, spec, features):
    """A version that loads but fails on every request: it needs a column no request has."""
    import mlflow
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    from mlops_assets.training.tracking import log_model, model_bytes, register
    from mlops_assets.training.train import inputs

    x = inputs(features, spec)
    x["ghost"] = 1.0
    pipeline = Pipeline(
        [
            ("preprocess", ColumnTransformer([("n", "passthrough", ["ghost", "tenure_months"])])),
            ("model", RandomForestClassifier(n_estimators=3, random_state=0)),
        ]
    ).fit(x, features[spec.target])
    with mlflow.start_run() as run:
        info = log_model(pipeline, x.head(3), pipeline.predict(x.head(3)), model_bytes(pipeline)[1])
    return register(tracking, spec.model_name, info.model_uri, run.info.run_id, {}).version


@pytest.fixture(scope="session")
def registry(tmp_path_factory, mlflow_server):
    from mlops_assets.training.tracking import Tracking

    root = tmp_path_factory.mktemp("serving")
    specs_dir = unique_specs(root)
    data_dir = root / "data"
    tracking = Tracking(mlflow_server.url)
    tracking.configure()
    versions, holdout = {}, {}
    for name in ("churn", "demand"):
        spec = get_spec(name, specs_dir)
        features = _features(data_dir, spec)
        hold = features[features["split"] == "holdout"]
        holdout[name] = records(hold, spec)
        versions[(name, "champion")] = _log(tracking, spec, features, spec.model)
        tracking.promote(spec.model_name, versions[(name, "champion")])
        if name == "churn":
            versions[(name, "challenger")] = _log(
                tracking, spec, features, spec.model.model_copy(update={"random_state": 3})
            )
            versions[(name, "third")] = _log(
                tracking, spec, features, spec.model.model_copy(update={"random_state": 5})
            )
            versions[(name, "faulty")] = _faulty(tracking, spec, features)
            # healthy and fast, but it learned the opposite: its mean prediction is far off
            flipped = features.assign(**{spec.target: 1 - features[spec.target]})
            versions[(name, "shifted")] = _log(tracking, spec, flipped, spec.model)
            small = features.head(300)
            slow = spec.model.model_copy(update={"n_estimators": 2500, "max_depth": None})
            versions[(name, "slow")] = _log(tracking, spec, small, slow)
    return Registry(specs_dir, data_dir, mlflow_server.url, versions, holdout)


def serve_env(registry: Registry, **extra) -> dict:
    env = server_env(
        MLFLOW_TRACKING_URI=registry.tracking_uri,
        MLOPS_SPECS_DIR=registry.specs_dir,
        MLOPS_DATA_DIR=str(registry.data_dir),
        MLOPS_SERVING_TOKEN=TOKEN,
        MLOPS_LOG_SEGMENT_ROWS="100000",
        MLOPS_LOG_SEGMENT_SECONDS="3600",
    )
    env = {k: v for k, v in env.items() if not k.startswith(("MLOPS_DATA_BACKEND", "LAKEFS_"))}
    env.update(extra)
    return env


def _ready(url: str) -> bool:
    """The server (or, given ``…/v2/models/<name>``, one model) is ready."""
    probe = f"{url}/ready" if "/v2/models/" in url else f"{url}/v2/health/ready"
    with urllib.request.urlopen(probe, timeout=2) as r:
        return r.status == 200


def start_server(registry: Registry, log: Path, **extra):
    port = free_port()
    cmd = [str(BIN / "mlops"), "serve", "--port", str(port), "--poll-seconds", "0"]
    proc = start(cmd, serve_env(registry, **extra), log)
    url = f"http://127.0.0.1:{port}"
    wait_until("inference server", lambda: _ready(url), 120, proc, log)
    return proc, url


@pytest.fixture(scope="session")
def server(registry, tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "serve.log"
    proc, url = start_server(registry, log)
    yield url
    stop(proc)


@pytest.fixture
def client(server, registry):
    c = ServingClient(server, TOKEN)
    for name in ("churn", "demand"):  # every test starts from the champion alone
        c.deploy(name, production=registry.versions[(name, "champion")])
        c.reset_stats(name)
    return c
