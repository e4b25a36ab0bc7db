"""``mlflow run . -e train``: the MLproject entry point, run as a user would, against a real
MLflow server; it logs the same lineage (and run hash) as the Dagster asset."""

import os
import re
import subprocess

import pytest

from mlops_assets.specs.model import get_spec
from mlops_assets.store.local import LocalStore
from mlops_assets.training.run import lineage_tags
from mlops_assets_tests.conftest import seed_store
from mlops_assets_tests.processes import BIN, REPO
from mlops_assets_tests.servers import server_env
from mlops_assets_tests.test_training.conftest import unique_specs

TIMEOUT = 300


@pytest.fixture
def project(tmp_path, mlflow_server):
    """A data dir seeded with churn, specs of our own, and the environment to run in."""
    specs_dir = unique_specs(tmp_path)
    spec = get_spec("churn", specs_dir)
    data_dir = tmp_path / "data"
    store = LocalStore(data_dir / "lakefs-local", spec.dataset.repository)
    head = seed_store(store, spec, days=6, rows=250)
    env = server_env(
        MLFLOW_TRACKING_URI=mlflow_server.url,
        MLOPS_DATA_DIR=str(data_dir),
        MLOPS_SPECS_DIR=specs_dir,
        MLOPS_DATA_BACKEND="local",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.pop("VIRTUAL_ENV", None)
    return spec, head, env


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def test_mlflow_run_trains_with_the_same_run_hash_as_dagster_and_registers_nothing(
    project, mlflow_server
):
    from mlflow import MlflowClient

    spec, head, env = project
    cmd = [str(BIN / "mlflow"), "run", ".", "-e", "train", "--env-manager", "local"]
    cmd += ["--experiment-name", "mlops-assets/churn", "-P", "spec=churn", "-P", "n_estimators=40"]
    done = run(cmd, env)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]

    found = re.search(r"^run ([0-9a-f]{32}): ", done.stdout, re.MULTILINE)
    assert found, output[-4000:]
    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    mlflow_run = client.get_run(found.group(1))
    assert mlflow_run.info.status == "FINISHED"
    experiment = client.get_experiment(mlflow_run.info.experiment_id)
    assert experiment.name == "mlops-assets/churn"
    assert "holdout_roc_auc" in mlflow_run.data.metrics
    assert mlflow_run.data.params["model.n_estimators"] == "40"
    tags = mlflow_run.data.tags
    assert tags["lakefs.commit"] == head
    assert tags["lakefs.repository"] == spec.dataset.repository
    assert tags["mlops.entry_point"] == "mlflow run"
    # The hash Dagster's trained_model computes for the same spec, params and commit.
    params = spec.model.model_copy(update={"n_estimators": 40})
    expected = lineage_tags(spec, params, head, spec.dataset.repository)
    assert tags["mlops.run_hash"] == expected["mlops.run_hash"]
    assert tags["mlops.code_version"] == expected["mlops.code_version"]

    # register defaults to false: the registry is the gate's business.
    assert client.search_model_versions(f"run_id = '{mlflow_run.info.run_id}'") == []
    assert client.search_registered_models(f"name = '{spec.model_name}'") == []


def churn_runs(client) -> int:
    experiment = client.get_experiment_by_name("mlops-assets/churn")
    if experiment is None:
        return 0
    return len(client.search_runs([experiment.experiment_id], max_results=1000))


def test_entry_point_rejects_a_bad_parameter_before_training(project, mlflow_server):
    from mlflow import MlflowClient

    _, _, env = project
    client = MlflowClient(tracking_uri=mlflow_server.url)
    before = churn_runs(client)

    cmd = [str(BIN / "python"), "-m", "mlops_assets.training.mlproject", "--spec", "churn"]
    done = run([*cmd, "--n-estimators=0"], env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "n_estimators" in done.stderr
    assert "rejected before training" in done.stderr
    assert churn_runs(client) == before  # no run was started


def test_mlproject_parameters_are_the_hyperparameters():
    """Hyperparameters are defined once (``Hyperparameters``); the MLproject entry point must
    offer exactly those, and pass each one to the training module."""
    import yaml

    from mlops_assets.specs import Hyperparameters

    entry = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]["train"]
    names = set(Hyperparameters.model_fields)
    assert set(entry["parameters"]) - {"spec", "ref", "register"} == names
    for name in names:
        assert f"--{name.replace('_', '-')}={{{name}}}" in entry["command"], name


def test_run_config_is_generated_from_the_hyperparameters():
    from mlops_assets.defs.training.assets import train_config_class
    from mlops_assets.specs import Hyperparameters
    from mlops_assets.specs.model import get_spec

    spec = get_spec("churn")
    config = train_config_class(spec)
    assert set(config.model_fields) == set(Hyperparameters.model_fields)
    assert config().model_dump() == spec.model.model_dump()
    for name, field in Hyperparameters.model_fields.items():
        assert config.model_fields[name].description == field.description
