import datetime as dt

import pytest

from mlops_assets.demo.simulator import simulate_batch, to_csv_bytes
from mlops_assets.specs.model import get_spec
from mlops_assets.store.local import LocalStore

DAY0 = dt.date(2026, 11, 1)

# Tracking.configure() sets these process-wide; a test registers them with monkeypatch first
# (pin_mlflow_http_env), so they are restored after it.
MLFLOW_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def pin_mlflow_http_env(monkeypatch) -> None:
    for var, value in MLFLOW_HTTP_ENV.items():
        monkeypatch.setenv(var, value)


@pytest.fixture(params=["churn", "demand"])
def spec(request):
    return get_spec(request.param)


def seed_store(store, spec, days: int = 3, rows: int = 120) -> str:
    """Publish ``days`` good batches straight to main; return main's head."""
    from mlops_assets.ingest import ingest_batch

    for i in range(days):
        day = DAY0 + dt.timedelta(days=i)
        df = simulate_batch(spec.simulator, day, rows=rows)
        result = ingest_batch(store, spec, to_csv_bytes(df), f"day-{day}")
        assert result.published, result.summary()
    return store.head("main")


@pytest.fixture
def seeded(tmp_path, spec):
    store = LocalStore(tmp_path / "store", spec.dataset.repository)
    head = seed_store(store, spec)
    return store, head


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One real ``mlflow server`` on loopback for the whole session."""
    from mlops_assets_tests.servers import mlflow_server as serve

    with serve(tmp_path_factory.mktemp("mlflow")) as server:
        yield server
