import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mlops_assets.specs import ModelSpec
from mlops_assets.specs.model import SPECS_DIR, get_spec
from mlops_assets.store.local import LocalStore
from mlops_assets_tests.conftest import pin_mlflow_http_env, seed_store


@dataclass
class Env:
    defs: dg.Definitions
    instance: dg.DagsterInstance
    specs_dir: str
    data_dir: Path
    tracking_uri: str

    def spec(self, name: str) -> ModelSpec:
        return get_spec(name, self.specs_dir)

    def store(self, spec: ModelSpec) -> LocalStore:
        return LocalStore(self.data_dir / "lakefs-local", spec.dataset.repository)

    def seed(self, spec: ModelSpec, days: int = 6, rows: int = 250) -> str:
        return seed_store(self.store(spec), spec, days=days, rows=rows)

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def tracking(self):
        from mlops_assets.training.tracking import Tracking

        t = Tracking(self.tracking_uri)
        t.configure()
        return t

    def run(self, keys, run_config=None, raise_on_error=True):
        job = self.defs.resolve_implicit_global_asset_job_def()
        return job.execute_in_process(
            instance=self.instance,
            asset_selection=keys,
            run_config=run_config,
            raise_on_error=raise_on_error,
        )


def unique_specs(tmp_path: Path) -> str:
    """The packaged specs, each with a registered model name of its own, so tests sharing
    one MLflow server never see each other's versions."""
    out = tmp_path / "specs"
    out.mkdir()
    tag = uuid.uuid4().hex[:8]
    for f in Path(SPECS_DIR).glob("*.yaml"):
        data = yaml.safe_load(f.read_text())
        data["registered_model"] = f"{data['name']}-{tag}"
        (out / f.name).write_text(yaml.safe_dump(data))
    return str(out)


def make_env(tmp_path, monkeypatch, tracking_uri: str | None) -> Env:
    specs_dir = unique_specs(tmp_path)
    data = tmp_path / "data"
    monkeypatch.setenv("MLOPS_DATA_DIR", str(data))
    monkeypatch.setenv("MLOPS_SPECS_DIR", specs_dir)
    monkeypatch.delenv("MLOPS_DATA_BACKEND", raising=False)
    monkeypatch.delenv("MLFLOW_UI_URL", raising=False)
    pin_mlflow_http_env(monkeypatch)  # restored after the test
    if tracking_uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from mlops_assets import settings
    from mlops_assets.definitions import defs

    uri = tracking_uri or settings.embedded_tracking()[0]
    return Env(defs(), None, specs_dir, data, uri)  # type: ignore[arg-type]


@pytest.fixture
def server_env(tmp_path, monkeypatch, mlflow_server):
    env = make_env(tmp_path, monkeypatch, mlflow_server.url)
    with dg.instance_for_test() as instance:
        env.instance = instance
        yield env


@pytest.fixture
def embedded_env(tmp_path, monkeypatch):
    env = make_env(tmp_path, monkeypatch, None)
    with dg.instance_for_test() as instance:
        env.instance = instance
        yield env
