"""Batch predictions through ``dg.materialize`` on a temporary instance, against a real MLflow
server: one day of a dataset scored by the version in production when the run starts, written
as Parquet to the versioned store at a new commit, with its lineage in the metadata; the rows
never reach the online prediction log."""

import datetime as dt
import io

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from mlops_assets.batch import batch_repository
from mlops_assets.defs.keys import (
    batch_predictions_key,
    dataset_key,
    features_key,
    model_evaluation_key,
    trained_model_key,
)
from mlops_assets.serving.predlog import predictions_repository
from mlops_assets.store.base import NotFound
from mlops_assets.store.local import LocalStore
from mlops_assets.training.pipeline import spec_types
from mlops_assets.training.train import inputs
from mlops_assets_tests.conftest import DAY0
from mlops_assets_tests.test_training.conftest import make_env

pytestmark = pytest.mark.usefixtures("mlflow_server")


@pytest.fixture
def env(tmp_path, monkeypatch, mlflow_server):
    env = make_env(tmp_path, monkeypatch, mlflow_server.url)
    with dg.instance_for_test() as instance:
        env.instance = instance
        yield env


def materialize(env, key, partition: str, config: dict | None = None):
    asset = env.defs.resolve_assets_def(key)
    return dg.materialize(
        [asset],
        instance=env.instance,
        partition_key=partition,
        run_config={"ops": {asset.op.name: {"config": config}}} if config else None,
        raise_on_error=False,
    )


def metadata(result, key) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in event.step_materialization_data.materialization.metadata.items()}


def test_a_day_is_scored_by_the_production_version_and_committed_as_parquet(env):
    spec = env.spec("churn")
    env.seed(spec, days=4, rows=150)  # DAY0 .. DAY0+3, 150 rows each
    head = env.store(spec).head("main")
    loop = [dataset_key("churn"), features_key("churn"), trained_model_key("churn")]
    env.run([*loop, model_evaluation_key("churn")])
    tracking = env.tracking()
    first = tracking.version_by_alias(spec.model_name, "production").version
    day = DAY0 + dt.timedelta(days=2)

    result = materialize(env, batch_predictions_key("churn"), day.isoformat())
    assert result.success
    meta = metadata(result, batch_predictions_key("churn"))
    assert meta["model_version"] == int(first)
    assert meta["data_commit"] == head and meta["data_ref"] == "main"
    assert meta["data_prefix"] == "batches/" and meta["row_count"] == 150
    assert meta["source_files"] == [f"batches/day-{day}.csv"]
    assert meta["model_version_url"].endswith(f"/versions/{first}")

    out = LocalStore(env.data_dir / "lakefs-local", batch_repository(spec.dataset.repository))
    commit = out.get_commit("main")
    assert commit.id == meta["predictions_commit"]
    assert commit.metadata["model_version"] == first and commit.metadata["data_commit"] == head
    path = f"predictions/date={day}/predictions.parquet"
    assert meta["predictions_path"] == path
    answers = pd.read_parquet(io.BytesIO(out.get(commit.id, path)))

    # the answers are the production model's, row for row, for exactly that day's rows
    batch = pd.read_csv(io.BytesIO(env.store(spec).get(head, f"batches/day-{day}.csv")))
    assert sorted(answers["customer_id"]) == sorted(batch["customer_id"].astype(str))
    model = tracking.load_model(spec.model_name, first, spec_types(spec))
    by_key = batch.set_index(batch["customer_id"].astype(str)).loc[answers["customer_id"]]
    x = inputs(by_key.reset_index(drop=True), spec)
    assert np.allclose(answers["probability"], model.predict_proba(x)[:, 1], atol=1e-9)
    assert (answers["prediction"].to_numpy() == model.predict(x)).all()
    assert set(answers["model_version"]) == {first}

    # nothing reached the online prediction log
    log = LocalStore(env.data_dir / "lakefs-local", predictions_repository(spec.dataset.repository))
    with pytest.raises(NotFound):
        log.list("main")

    # production moves to another version: the same day is scored again by it, in a new
    # commit; the first answers stay readable at their own commit
    env.run(
        [trained_model_key("churn")],
        {"ops": {"churn__trained_model": {"config": {"n_estimators": 40}}}},
    )
    versions = sorted(int(v.version) for v in tracking.versions(spec.model_name))
    second = str(versions[-1])
    assert second != first
    env.client().set_registered_model_alias(spec.model_name, "production", second)
    again = materialize(env, batch_predictions_key("churn"), day.isoformat())
    assert again.success
    meta2 = metadata(again, batch_predictions_key("churn"))
    assert meta2["model_version"] == int(second)
    assert meta2["predictions_commit"] != commit.id
    newer = pd.read_parquet(io.BytesIO(out.get(meta2["predictions_commit"], path)))
    assert set(newer["model_version"]) == {second}
    assert set(pd.read_parquet(io.BytesIO(out.get(commit.id, path)))["model_version"]) == {first}

    # a prefix and ref of the user's choice, every row under it
    whole = materialize(
        env, batch_predictions_key("churn"), day.isoformat(), {"ref": head, "whole_prefix": True}
    )
    assert whole.success
    assert metadata(whole, batch_predictions_key("churn"))["row_count"] == 600


def test_without_a_production_version_nothing_is_scored_and_the_error_says_what_to_do(env):
    spec = env.spec("demand")
    env.seed(spec, days=2, rows=120)
    result = materialize(env, batch_predictions_key("demand"), DAY0.isoformat())
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert f"{spec.model_name!r} has no 'production' version" in failure.message
    assert "Materialize demand/deployment" in failure.message
    out = LocalStore(env.data_dir / "lakefs-local", batch_repository(spec.dataset.repository))
    with pytest.raises(NotFound):
        out.list("main")
