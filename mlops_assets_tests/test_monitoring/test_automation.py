"""Declarative automation of the loop, evaluated on a real instance: a new commit is noticed
and flows downstream; a failing blocking check stops the flow."""

import datetime as dt

import dagster as dg

from mlops_assets.defs.automation import build_commit_sensor
from mlops_assets.defs.keys import dataset_key, features_key, raw_data_key
from mlops_assets.defs.metadata import latest_data_version
from mlops_assets.demo.simulator import inject_fault, simulate_batch, to_csv_bytes
from mlops_assets.ingest import ingest_batch
from mlops_assets_tests.test_training.conftest import make_env

LOOP = ["dataset", "features", "trained_model", "model_evaluation", "deployment"]


def requested(result) -> set[str]:
    keys = [dg.AssetKey(["churn", name]) for name in LOOP]
    return {k.to_user_string() for k in keys if result.get_num_requested(k)}


def test_a_new_commit_flows_downstream_and_a_failed_blocking_check_stops_it(tmp_path, monkeypatch):
    env = make_env(tmp_path, monkeypatch, None)
    with dg.instance_for_test() as instance:
        env.instance = instance
        spec = env.spec("churn")
        store = env.store(spec)
        env.seed(spec, days=3, rows=120)
        sensor = build_commit_sensor(spec)
        resources = {"data_store": env.defs.resources["data_store"]}

        def tick():
            with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
                return sensor(ctx)

        def observed() -> str:
            """One tick that observes main; its observation recorded as the daemon would (a
            directly invoked sensor stores nothing). Returns the tick's message."""
            result = tick()
            assert isinstance(result, dg.SensorResult) and not result.run_requests
            (event,) = result.asset_events
            assert isinstance(event, dg.AssetObservation)
            assert event.asset_key == raw_data_key("churn")
            assert event.tags["dagster/data_version"] == store.head("main")
            assert event.metadata["lakefs_commit"].value == store.head("main")
            assert event.metadata["source"].value == "new-commit sensor"
            instance.report_runless_asset_event(event)
            return result.skip_reason.skip_message

        assert "observed main" in observed()
        assert "still at" in tick().skip_message
        assert env.run([dataset_key("churn"), features_key("churn")]).success
        first = dg.evaluate_automation_conditions(defs=env.defs, instance=instance)

        # a new batch lands on main: noticed by the sensor; the whole loop is requested at once
        day = dt.date(2026, 11, 20)
        batch = to_csv_bytes(simulate_batch("churn", day, rows=120))
        assert ingest_batch(store, spec, batch, "day-new").published
        assert "observed main" in observed()
        assert latest_data_version(instance, raw_data_key("churn")) == store.head("main")
        second = dg.evaluate_automation_conditions(
            defs=env.defs, instance=instance, cursor=first.cursor
        )
        assert requested(second) == {f"churn/{name}" for name in LOOP}

        # the dataset read at a rejected batch's branch fails a blocking check: features wait
        bad = inject_fault(simulate_batch("churn", day, rows=50), "nulls", "customer_id", "churned")
        rejected = ingest_batch(store, spec, bad, "day-bad")
        assert not rejected.published
        cfg = {"ops": {"churn__dataset": {"config": {"ref": rejected.branch}}}}
        result = env.run([dataset_key("churn")], cfg, raise_on_error=False)
        assert not result.success
        third = dg.evaluate_automation_conditions(
            defs=env.defs, instance=instance, cursor=second.cursor
        )
        assert not requested(third) & {"churn/features", "churn/trained_model"}
