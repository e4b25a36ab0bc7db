"""Which Dagster instance config an environment gets (MLOPS_ENV), and that the production file is
what Dagster and dagster-k8s accept, checked with their own schemas."""

import pytest
import yaml
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster_k8s import K8sRunLauncher

from mlops_assets import instance
from mlops_assets_tests.processes import REPO

EMBEDDED = REPO / "dagster.yaml"
PRODUCTION = REPO / "deploy" / "dagster" / "dagster.production.yaml"


@pytest.fixture
def pg_env(monkeypatch):
    for var in instance.PRODUCTION_ENV:
        monkeypatch.setenv(var, "5432" if var.endswith("PORT") else f"value-of-{var}")


@pytest.mark.parametrize("value", [None, "", "embedded", " Embedded "])
def test_unset_or_embedded_selects_the_embedded_config(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("MLOPS_ENV", raising=False)
    else:
        monkeypatch.setenv("MLOPS_ENV", value)
    assert instance.instance_config_file() == EMBEDDED


def test_production_selects_the_production_config(monkeypatch):
    monkeypatch.setenv("MLOPS_ENV", "production")
    assert instance.instance_config_file() == PRODUCTION
    assert instance.instance_config_file("embedded") == EMBEDDED  # an argument wins


@pytest.mark.parametrize("value", ["prod", "staging", "k8s"])
def test_any_other_value_is_refused_with_the_allowed_ones(monkeypatch, value):
    monkeypatch.setenv("MLOPS_ENV", value)
    with pytest.raises(ValueError) as e:
        instance.instance_config_file()
    message = str(e.value)
    assert f"MLOPS_ENV={value!r} is not supported" in message
    assert "'production'" in message and "'embedded'" in message and "unset" in message


def test_install_writes_the_selected_file_into_dagster_home(tmp_path, monkeypatch, pg_env):
    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("MLOPS_ENV", raising=False)
    assert instance.install_instance_config() == home / "dagster.yaml"
    assert (home / "dagster.yaml").read_text() == EMBEDDED.read_text()
    monkeypatch.setenv("MLOPS_ENV", "production")
    assert instance.install_instance_config() == home / "dagster.yaml"
    assert (home / "dagster.yaml").read_text() == PRODUCTION.read_text()
    assert sorted(p.name for p in home.iterdir()) == ["dagster.yaml"]  # no temporary left


def test_install_production_names_the_variables_it_lacks(tmp_path, monkeypatch):
    for var in instance.PRODUCTION_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DAGSTER_PG_HOST", "db.internal")
    with pytest.raises(ValueError) as e:
        instance.install_instance_config("production", tmp_path / "home")
    message = str(e.value)
    for var in ("DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB", "DAGSTER_PG_PORT"):
        assert var in message
    assert "DAGSTER_PG_HOST" not in message
    assert not (tmp_path / "home" / "dagster.yaml").exists()
    # Preparing a DAGSTER_HOME before the secrets exist (an image build) is allowed on request.
    path = instance.install_instance_config("production", tmp_path / "home", require_env=False)
    assert path.read_text() == PRODUCTION.read_text()


def test_install_needs_a_dagster_home(monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with pytest.raises(ValueError, match="DAGSTER_HOME is not set"):
        instance.install_instance_config("embedded")


def test_production_config_passes_dagsters_own_instance_schema(pg_env):
    config, custom_class = dagster_instance_config(str(PRODUCTION.parent), PRODUCTION.name)
    assert custom_class is None
    assert set(config["storage"]["postgres"]["postgres_db"]) >= {"username", "hostname", "db_name"}
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_monitoring"]["enabled"] and config["run_retries"]["enabled"]
    assert config["telemetry"] == {"enabled": False}


def test_production_keeps_the_embedded_pools():
    """The promotion gate's pool (mlops_gate_<spec>, one at a time) means the same everywhere."""
    embedded = yaml.safe_load(EMBEDDED.read_text())
    production = yaml.safe_load(PRODUCTION.read_text())
    assert production["concurrency"]["pools"] == embedded["concurrency"]["pools"]
    assert production["concurrency"]["pools"]["default_limit"] == 1


def test_run_launcher_config_is_valid_for_k8s_run_launcher():
    launcher = yaml.safe_load(PRODUCTION.read_text())["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    result = process_config(K8sRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors
    value = result.value
    assert value["job_namespace"] == "mlops"
    assert value["load_incluster_config"] is True  # in the cluster, no kubeconfig
    assert value["env_config_maps"] == ["mlops-env"] and value["env_secrets"] == ["mlops-secrets"]
    assert value["resources"]["requests"] == {"cpu": "250m", "memory": "512Mi"}


def test_a_misspelt_launcher_setting_is_refused():
    config = yaml.safe_load(PRODUCTION.read_text())["run_launcher"]["config"]
    result = process_config(K8sRunLauncher.config_type(), {**config, "job_namspace": "mlops"})
    assert not result.success
    assert any("job_namspace" in error.message for error in result.errors)


def test_run_limits_outside_concurrency_would_be_refused(tmp_path, pg_env):
    """Why the run limits sit under `concurrency.runs`: Dagster refuses them in both places."""
    config = yaml.safe_load(PRODUCTION.read_text())
    config["run_coordinator"]["config"]["max_concurrent_runs"] = 10
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(DagsterInvalidConfigError, match="max_concurrent_runs"):
        dagster_instance_config(str(tmp_path))
