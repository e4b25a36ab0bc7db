"""trained_model and model_evaluation through Dagster, against a real MLflow server."""

import socket
import threading

import pandas as pd
import pytest

from mlops_assets.defs.keys import (
    dataset_key,
    features_key,
    model_evaluation_key,
    trained_model_key,
)
from mlops_assets.training.lineage import LIBRARIES
from mlops_assets.training.tracking import CHALLENGER, PRODUCTION

WORSE = {"estimator": "random_forest", "n_estimators": 1, "max_depth": 1}


def keys(name, upstream=True):
    training = [trained_model_key(name), model_evaluation_key(name)]
    return ([dataset_key(name), features_key(name)] if upstream else []) + training


def train_config(name, **params):
    return {"ops": {f"{name}__trained_model": {"config": params}}}


def latest(env, key):
    return env.instance.get_latest_materialization_event(key).asset_materialization


def alias(env, spec, name):
    from mlflow.exceptions import MlflowException

    try:
        return str(env.client().get_model_version_by_alias(spec.model_name, name).version)
    except MlflowException as e:
        if "not found" in str(e):
            return None
        raise


def gate_evaluation(result):
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "promotion_gate"]
    return check


@pytest.mark.parametrize("name", ["churn", "demand"])
def test_first_version_is_traced_both_ways_and_becomes_champion_through_the_gate(server_env, name):
    env = server_env
    spec = env.spec(name)
    head = env.seed(spec)
    result = env.run(keys(name))
    assert result.success

    mat = latest(env, trained_model_key(name))
    meta = {k: v.value for k, v in mat.metadata.items()}
    version = str(meta["model_version"])
    assert meta["lakefs_commit"] == head
    for metric in spec.metrics:
        assert isinstance(meta[metric], float), metric  # numbers, so the UI plots them
    assert meta["mlflow_run_url"].startswith(f"{env.tracking_uri}/#/experiments/")
    assert meta["model_version_url"].endswith(f"/versions/{version}")

    client = env.client()
    mv = client.get_model_version(spec.model_name, version)
    run = client.get_run(mv.run_id)
    assert run.info.status == "FINISHED"
    assert meta["mlflow_run_id"] == run.info.run_id
    for tags in (run.data.tags, mv.tags):
        assert tags["lakefs.commit"] == head
        assert tags["lakefs.branch"] == "main"
        assert tags["lakefs.repository"] == spec.dataset.repository
        assert tags["dagster.run_id"] == result.run_id
        assert tags["dagster.asset_key"] == f"{name}/trained_model"
        assert tags["mlops.run_hash"] == meta["run_hash"]
        assert tags["mlops.code_version"]
        assert all(f"lib.{lib}" in tags for lib in LIBRARIES)
    assert run.data.tags["dagster_run_id"] == result.run_id  # dagster-mlflow's own tag
    assert {f"holdout_{m}" for m in spec.metrics} <= set(run.data.metrics)
    assert run.data.params["model.n_estimators"] == str(spec.model.n_estimators)
    assert mat.tags["dagster/data_version"] == meta["run_hash"]
    if spec.task == "classification":
        # the decision threshold is part of the model: in the run, the version and the UI
        threshold = meta["decision_threshold"]
        assert 0 < threshold < 1 and meta["threshold_rule"].startswith("maximize f1")
        assert float(run.data.params["decision_threshold"]) == threshold
        assert float(mv.tags["mlops.decision_threshold"]) == threshold
        assert env.tracking().load_model(spec.model_name, version).threshold == threshold
    else:
        assert "decision_threshold" not in meta and "decision_threshold" not in run.data.params

    # the model is stored with skops, with a signature and an input example
    from mlflow.models import get_model_info

    info = get_model_info(f"models:/{spec.model_name}/{version}")
    assert info.flavors["sklearn"]["serialization_format"] == "skops"
    assert info.signature is not None
    assert set(info.signature.inputs.input_names()) == set(spec.features)
    assert info.saved_input_example_info is not None

    evaluation = latest(env, model_evaluation_key(name))
    emeta = {k: v.value for k, v in evaluation.metadata.items()}
    assert emeta["decision"] == "passed"
    assert "no champion yet" in emeta["reason"]
    assert gate_evaluation(result).passed
    assert alias(env, spec, PRODUCTION) == version
    assert alias(env, spec, CHALLENGER) == version
    assert client.get_model_version(spec.model_name, version).tags["gate.decision"] == "passed"


@pytest.mark.parametrize(("name", "why"), [("churn", "floor"), ("demand", "worse than champion")])
def test_worse_challenger_is_refused_with_its_reason_and_production_stays(server_env, name, why):
    env = server_env
    spec = env.spec(name)
    env.seed(spec)
    assert env.run(keys(name)).success
    champion = alias(env, spec, PRODUCTION)

    result = env.run(
        keys(name, upstream=False), run_config=train_config(name, **WORSE), raise_on_error=False
    )
    assert not result.success  # the blocking gate stops the run
    check = gate_evaluation(result)
    assert not check.passed
    assert why in check.description and "refused" in check.description
    meta = {k: v.value for k, v in latest(env, model_evaluation_key(name)).metadata.items()}
    assert meta["decision"] == "refused"
    assert meta[f"champion_{spec.evaluation.metric}"] > meta[f"challenger_{spec.evaluation.metric}"]
    assert meta["aliases_moved"] == "none"
    assert alias(env, spec, PRODUCTION) == champion
    assert alias(env, spec, CHALLENGER) == champion
    refused = str(meta["challenger_version"])
    tags = env.client().get_model_version(spec.model_name, refused).tags
    assert tags["gate.decision"] == "refused" and why in tags["gate.reason"]


def test_challenger_within_tolerance_gets_challenger_alias_not_production(server_env):
    env = server_env
    spec = env.spec("churn")
    env.seed(spec)
    assert env.run(keys("churn")).success
    champion = alias(env, spec, PRODUCTION)
    result = env.run(
        keys("churn", upstream=False), run_config=train_config("churn", random_state=7)
    )
    assert result.success and gate_evaluation(result).passed
    new = str(latest(env, trained_model_key("churn")).metadata["model_version"].value)
    assert new != champion
    assert alias(env, spec, CHALLENGER) == new
    assert alias(env, spec, PRODUCTION) == champion  # production moves only by deployment


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"n_estimators": 0}, "n_estimators"),
        ({"estimator": "xgboost"}, "estimator"),
        ({"learning_rate": 5.0}, "learning_rate"),
    ],
)
def test_bad_hyperparameter_values_are_rejected_before_training(server_env, params, field):
    env = server_env
    spec = env.spec("churn")
    env.seed(spec)
    assert env.run(keys("churn")[:2]).success
    result = env.run([trained_model_key("churn")], train_config("churn", **params), False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    text = str(failure.event_specific_data.error)
    assert f"field '{field}'" in text and "rejected before training" in text
    assert env.client().search_registered_models(f"name = '{spec.model_name}'") == []


def test_wrong_hyperparameter_type_is_rejected_at_launch_naming_the_field(server_env):
    import dagster as dg

    env = server_env
    with pytest.raises(dg.DagsterInvalidConfigError, match="n_estimators"):
        env.run([trained_model_key("churn")], train_config("churn", n_estimators="many"))


def test_training_failure_leaves_the_champion_and_closes_the_mlflow_run(server_env):
    env = server_env
    spec = env.spec("churn")
    env.seed(spec)
    assert env.run(keys("churn")).success
    champion = alias(env, spec, PRODUCTION)
    versions = len(env.client().search_model_versions(f"name = '{spec.model_name}'"))

    # The features at this commit have one class only: a classifier cannot be trained.
    path = env.data_dir / "assets" / "churn" / "features.parquet"
    table = pd.read_parquet(path)
    table[spec.target] = 0
    table.to_parquet(path, index=False)

    result = env.run([trained_model_key("churn")], raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "single class" in str(failure.event_specific_data.error)
    client = env.client()
    exp = client.get_experiment_by_name("mlops-assets/churn")
    (failed,) = client.search_runs([exp.experiment_id], f"tags.dagster_run_id = '{result.run_id}'")
    assert failed.info.status == "FAILED"
    assert client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'") == []
    assert len(client.search_model_versions(f"name = '{spec.model_name}'")) == versions
    assert alias(env, spec, PRODUCTION) == champion


def _black_hole():
    """A TCP server that accepts connections and never answers: a hung tracking server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    conns = []
    stop = threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(sock.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    return sock, stop, conns


@pytest.mark.parametrize("fault", ["down", "hung"])
def test_unreachable_tracking_server_fails_with_its_uri_and_registers_nothing(server_env, fault):
    env = server_env
    spec = env.spec("churn")
    env.seed(spec)
    assert env.run(keys("churn")[:2]).success
    if fault == "down":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # closed again: nothing listens
        hole = None
    else:
        hole = _black_hole()
        port = hole[0].getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    fast = {"tracking_uri": uri, "max_retries": 1, "backoff_seconds": 0, "timeout_seconds": 1.0}
    try:
        result = env.run(
            [trained_model_key("churn")],
            {"resources": {"mlflow": {"config": fast}}},
            raise_on_error=False,
        )
    finally:
        if hole:
            hole[1].set()
            hole[0].close()
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    text = str(failure.event_specific_data.error)
    assert uri in text and "did not answer" in text and "MLFLOW_TRACKING_URI" in text


def test_bad_gate_config_is_rejected_naming_the_field(server_env):
    env = server_env
    spec = env.spec("churn")
    env.seed(spec)
    assert env.run(keys("churn")[:3]).success
    cfg = {"ops": {"churn__model_evaluation": {"config": {"tolerance": 5.0}}}}
    result = env.run([model_evaluation_key("churn")], cfg, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "field 'tolerance'" in str(failure.event_specific_data.error)
    assert alias(env, spec, PRODUCTION) is None


def test_tracking_server_hanging_during_the_gate_moves_no_alias(tmp_path, monkeypatch):
    """A real server, frozen (SIGSTOP) after training: the gate fails naming the URI, and the
    champion and challenger aliases stay where they were."""
    import os
    import signal

    import dagster as dg

    from mlops_assets_tests.servers import mlflow_server
    from mlops_assets_tests.test_training.conftest import make_env

    with mlflow_server(tmp_path / "mlflow") as server, dg.instance_for_test() as instance:
        env = make_env(tmp_path, monkeypatch, server.url)
        env.instance = instance
        spec = env.spec("churn")
        env.seed(spec)
        assert env.run(keys("churn")).success
        champion = alias(env, spec, PRODUCTION)
        cfg = train_config("churn", random_state=5)
        assert env.run([trained_model_key("churn")], cfg).success
        fast = {"tracking_uri": server.url, "max_retries": 1, "backoff_seconds": 0}
        os.killpg(server.proc.pid, signal.SIGSTOP)
        try:
            result = env.run(
                [model_evaluation_key("churn")],
                {"resources": {"mlflow": {"config": {**fast, "timeout_seconds": 2.0}}}},
                raise_on_error=False,
            )
        finally:
            os.killpg(server.proc.pid, signal.SIGCONT)
        assert not result.success
        (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        assert server.url in str(failure.event_specific_data.error)
        assert alias(env, spec, PRODUCTION) == champion
        assert alias(env, spec, CHALLENGER) == champion
        new = str(latest(env, trained_model_key("churn")).metadata["model_version"].value)
        assert "gate.decision" not in env.client().get_model_version(spec.model_name, new).tags
