"""The monitoring sensor and the stale-model sensor, on a real instance and a real store."""

import time

import dagster as dg
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

from mlops_assets.defs.keys import (
    drift_report_key,
    production_performance_key,
    retrain_keys,
    trained_model_key,
)
from mlops_assets.defs.monitoring.sensors import build_freshness_sensor, build_monitoring_sensor
from mlops_assets.defs.resources.serving import ServingResource
from mlops_assets.monitoring.labels import commit_labels, labels_repository
from mlops_assets.specs.model import get_spec
from mlops_assets.store.local import LocalStore
from mlops_assets_tests.test_training.conftest import make_env


def test_new_predictions_or_labels_request_one_monitoring_run_each(tmp_path, monkeypatch):
    env = make_env(tmp_path, monkeypatch, None)
    spec = env.spec("churn")
    sensor = build_monitoring_sensor(spec)
    resources = {"data_store": env.defs.resources["data_store"]}
    store = LocalStore(env.data_dir / "lakefs-local", labels_repository(spec))
    with dg.instance_for_test() as instance:

        def tick(cursor):
            with dg.build_sensor_context(
                instance=instance, resources=resources, cursor=cursor
            ) as ctx:
                return sensor(ctx), ctx.cursor

        result, cursor = tick(None)
        assert isinstance(result, dg.SkipReason) and "nothing logged yet" in result.skip_message

        head = commit_labels(store, spec, [{"request_id": "r1", "row": 0, "label": 1}])
        result, cursor = tick(cursor)
        assert isinstance(result, dg.RunRequest)
        assert result.run_key == f"monitor-churn-{head}" and cursor == head
        assert set(result.asset_selection) == {
            drift_report_key("churn"),
            production_performance_key("churn"),
        }
        assert result.tags["mlops/trigger"] == "new_predictions"

        again, cursor = tick(cursor)
        assert isinstance(again, dg.SkipReason) and "no new predictions" in again.skip_message

        # while the model retrains (a run of the loop going), new commits wait for it to end
        retraining = instance.add_run(
            dg.DagsterRun(
                job_name="__ASSET_JOB",
                status=dg.DagsterRunStatus.STARTED,
                asset_selection=frozenset(retrain_keys("churn")),
            )
        )
        later = commit_labels(store, spec, [{"request_id": "r2", "row": 0, "label": 0}])
        held, cursor = tick(cursor)
        assert isinstance(held, dg.SkipReason), held
        assert f"retraining run {retraining.run_id[:8]} is under way" in held.skip_message
        assert cursor == head  # not consumed: the commit is still to be monitored
        instance.report_run_canceled(retraining)
        resumed, cursor = tick(cursor)
        assert isinstance(resumed, dg.RunRequest) and resumed.run_key == f"monitor-churn-{later}"


def test_the_freshness_policies_are_declared_and_a_stale_model_is_retrained(tmp_path, monkeypatch):
    env = make_env(tmp_path, monkeypatch, None)
    spec = get_spec("churn", env.specs_dir)
    graph = env.defs.resolve_asset_graph()
    model_policy = graph.get(trained_model_key("churn")).freshness_policy
    dataset_policy = graph.get(dg.AssetKey(["churn", "dataset"])).freshness_policy
    assert model_policy.fail_window.to_timedelta().total_seconds() == 168 * 3600
    assert model_policy.warn_window.to_timedelta().total_seconds() == 126 * 3600
    assert dataset_policy.fail_window.to_timedelta().total_seconds() == 48 * 3600

    sensor = build_freshness_sensor(spec)
    with dg.instance_for_test() as instance:

        def tick(cursor=None):
            # no alert on this path: the servers' gauge is never touched (nothing listens there)
            serving = ServingResource(url="http://127.0.0.1:9")
            ctx = dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"serving": serving}
            )
            return sensor(ctx), ctx.cursor

        result, _ = tick()
        assert "has not evaluated the model yet" in result.skip_message

        def state(new, old):
            # what Dagster's freshness daemon records when the state changes
            instance._report_runless_asset_event(
                FreshnessStateChange(
                    key=trained_model_key("churn"),
                    new_state=new,
                    previous_state=old,
                    state_change_timestamp=time.time(),
                )
            )

        state(FreshnessState.PASS, FreshnessState.UNKNOWN)
        result, _ = tick()
        assert "freshness is PASS" in result.skip_message

        state(FreshnessState.FAIL, FreshnessState.PASS)
        result, cursor = tick()
        assert isinstance(result, dg.RunRequest)
        assert result.run_key.startswith("freshness-churn-")
        assert result.tags["mlops/trigger"] == "freshness"
        assert list(result.asset_selection) == retrain_keys("churn")

        again, _ = tick(cursor)  # the same failure: no second run
        assert isinstance(again, dg.SkipReason) and "already requested" in again.skip_message
