"""Loading models safely, registering idempotently, and the MLflow run of a materialization:
resumed on a retry, ended FAILED or KILLED, never left active (also when the server is gone)."""

import io
import json
import logging
import uuid
import zipfile

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.linear_model import LinearRegression

from mlops_assets.defs.resources.tracking import MlflowResource
from mlops_assets.specs.model import get_spec
from mlops_assets.training.pipeline import build_pipeline
from mlops_assets.training.tracking import (
    TRUSTED_TYPES,
    RegistryError,
    load_skops,
    model_bytes,
)
from mlops_assets.training.train import inputs
from mlops_assets_tests.conftest import pin_mlflow_http_env
from mlops_assets_tests.processes import stop
from mlops_assets_tests.servers import mlflow_server as private_mlflow_server


@pytest.mark.parametrize("estimator", ["random_forest", "gradient_boosting", "linear"])
@pytest.mark.parametrize("name", ["churn", "demand"])
def test_every_pipeline_we_build_loads_with_the_fixed_allow_list(tmp_path, name, estimator):
    spec = get_spec(name)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            c: rng.normal(size=40) if c in spec.numeric_features else rng.choice(["a", "b"], 40)
            for c in spec.features
        }
    )
    y = rng.integers(0, 2, 40) if spec.task == "classification" else rng.normal(size=40)
    params = spec.model.model_copy(update={"estimator": estimator, "n_estimators": 3})
    pipeline = build_pipeline(spec, params).fit(inputs(frame, spec), y)
    blob, needed = model_bytes(pipeline)
    assert set(needed) <= TRUSTED_TYPES
    path = tmp_path / "model.skops"
    path.write_bytes(blob)
    loaded = load_skops(path, "test model")
    assert np.array_equal(
        loaded.predict(inputs(frame, spec)), pipeline.predict(inputs(frame, spec))
    )


def _tampered(tmp_path, module: str, name: str, argument: str):
    """A skops file whose schema calls ``module.name(argument)`` when loaded."""
    good = sio.dumps(LinearRegression())
    schema = json.loads(zipfile.ZipFile(io.BytesIO(good)).read("schema.json"))
    payload = {
        "__class__": name,
        "__module__": module,
        "__loader__": "ConstructorFromReduceNode",
        "content": {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "content": [
                {
                    "__class__": "str",
                    "__module__": "builtins",
                    "__loader__": "JsonNode",
                    "content": json.dumps(argument),
                    "is_json": True,
                }
            ],
        },
        "protocol": schema["protocol"],
        "_skops_version": schema.get("_skops_version"),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("schema.json", json.dumps(payload))
    path = tmp_path / "evil.skops"
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.parametrize(("module", "name"), [("builtins", "eval"), ("numpy", "load")])
def test_a_tampered_model_file_is_refused_before_anything_runs(tmp_path, module, name):
    marker = tmp_path / "PWNED"
    code = f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"
    path = _tampered(tmp_path, module, name, code)
    with pytest.raises(RegistryError, match=rf"{module}\.{name}.*refusing to load"):
        load_skops(path, "version 9 of 'churn'")
    assert not marker.exists()


def test_registering_twice_from_one_run_gives_one_version(server_env):
    from mlops_assets.defs.keys import dataset_key, features_key, trained_model_key
    from mlops_assets.training.tracking import register

    env = server_env
    spec = env.spec("demand")
    env.seed(spec)
    keys = [dataset_key("demand"), features_key("demand"), trained_model_key("demand")]
    assert env.run(keys).success
    mat = env.instance.get_latest_materialization_event(trained_model_key("demand"))
    meta = {k: v.value for k, v in mat.asset_materialization.metadata.items()}
    tracking = env.tracking()
    again = register(
        tracking, spec.model_name, f"models:/{spec.model_name}/1", meta["mlflow_run_id"], {}
    )
    assert again.version == str(meta["model_version"])
    assert len(env.client().search_model_versions(f"name = '{spec.model_name}'")) == 1


# ---- MlflowResource.start_run: one MLflow run per Dagster run, always ended ----------------


def _resource(monkeypatch, url: str) -> MlflowResource:
    """A resource on ``url`` with an experiment of its own and a short retry policy."""
    pin_mlflow_http_env(monkeypatch)  # tracking() sets these process-wide; restored after
    prefix = f"test-start-run-{uuid.uuid4().hex[:8]}/"
    return MlflowResource(
        tracking_uri=url, experiment_prefix=prefix, max_retries=1, backoff_seconds=0
    )


def _materialize(resource: MlflowResource, body, retries: int = 0):
    """Materialize an asset whose body runs ``body(context, active_run)`` inside start_run,
    tagging the run with the attempt number."""
    spec = get_spec("churn")

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=retries) if retries else None)
    def probe(context: dg.AssetExecutionContext, mlflow: MlflowResource) -> None:
        tracking = mlflow.tracking()
        tags = {"attempt": str(context.retry_number)}
        with mlflow.start_run(context, tracking, spec, "probe", tags) as run:
            body(context, run)

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [probe], resources={"mlflow": resource}, instance=instance, raise_on_error=False
        )
        warnings = [
            e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING
        ]
    return result, warnings


def _runs(resource: MlflowResource):
    client = resource.tracking().client()
    exp = client.get_experiment_by_name(f"{resource.experiment_prefix}churn")
    return client.search_runs([exp.experiment_id]) if exp else []


def _failure(result) -> str:
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return str(failure.event_specific_data.error)


def test_a_retry_of_the_same_dagster_run_resumes_its_mlflow_run(mlflow_server, monkeypatch):
    import mlflow

    resource = _resource(monkeypatch, mlflow_server.url)
    seen = []

    def body(context, run):
        seen.append(run.info.run_id)
        assert mlflow.active_run().info.run_id == run.info.run_id
        if context.retry_number == 0:
            raise RuntimeError("the first attempt fails")

    result, _ = _materialize(resource, body, retries=1)
    assert result.success
    assert len(seen) == 2 and seen[0] == seen[1]  # the retry wrote to the same MLflow run
    (run,) = _runs(resource)
    assert run.info.run_id == seen[0]
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert run.data.tags["attempt"] == "1"  # tagged again by the retry
    assert run.info.status == "FINISHED"
    assert mlflow.active_run() is None


def test_a_retry_resumes_its_run_whatever_experiment_the_process_had_active(
    mlflow_server, monkeypatch
):
    """An earlier step or library call in the same process may have set another experiment
    active; MLflow refuses to resume a run outside it unless start_run sets its own."""
    import mlflow
    from mlflow.tracking import fluent

    resource = _resource(monkeypatch, mlflow_server.url)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)  # restored after the test
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    client = resource.tracking().client()
    other = client.create_experiment(f"{resource.experiment_prefix}elsewhere")
    mlflow.set_experiment(experiment_id=other)
    seen = []

    def body(context, run):
        seen.append(run.info.run_id)
        if context.retry_number == 0:
            mlflow.set_experiment(experiment_id=other)  # as a library call might
            raise RuntimeError("the first attempt fails")

    result, _ = _materialize(resource, body, retries=1)
    assert result.success
    assert len(seen) == 2 and seen[0] == seen[1]


@pytest.mark.parametrize(
    ("error", "status"), [(RuntimeError, "FAILED"), (KeyboardInterrupt, "KILLED")]
)
def test_a_run_whose_body_raises_ends_failed_and_leaves_no_active_run(
    mlflow_server, monkeypatch, error, status
):
    import mlflow

    resource = _resource(monkeypatch, mlflow_server.url)

    def body(context, run):
        raise error("the body failed")

    result, _ = _materialize(resource, body)
    assert not result.success
    if error is RuntimeError:
        assert "the body failed" in _failure(result)
    (run,) = _runs(resource)
    assert run.info.status == status
    assert mlflow.active_run() is None
    # and the next materialization in this process starts a run of its own
    result, _ = _materialize(resource, lambda context, run: None)
    assert result.success
    assert {r.info.status for r in _runs(resource)} == {status, "FINISHED"}


@pytest.mark.parametrize("body_fails", [True, False])
def test_a_tracking_server_gone_at_the_end_leaves_no_active_run(
    tmp_path, monkeypatch, mlflow_server, body_fails
):
    """The server dies while the body runs: the run cannot be ended on it, but no run stays
    active in this process and the next run (on a live server) starts and ends normally."""
    import mlflow

    with private_mlflow_server(tmp_path / "mlflow") as doomed:
        resource = _resource(monkeypatch, doomed.url)

        def body(context, run):
            stop(doomed.proc)
            if body_fails:
                raise RuntimeError("the body failed")

        result, warnings = _materialize(resource, body)
    assert not result.success
    assert mlflow.active_run() is None
    if body_fails:  # the body's error is the one reported; ending the run is a warning
        assert "the body failed" in _failure(result)
        assert any(doomed.url in w and "FAILED" in w for w in warnings), warnings
    else:  # the run could not be marked FINISHED: that fails the step, naming the server
        assert doomed.url in _failure(result) and "did not answer" in _failure(result)

    live = _resource(monkeypatch, mlflow_server.url)
    result, _ = _materialize(live, lambda context, run: None)
    assert result.success
    (run,) = _runs(live)
    assert run.info.status == "FINISHED"
    assert mlflow.active_run() is None
