"""The drift_report asset: reference from the serving version's lineage, current window from
the committed prediction log."""

import datetime as dt
import urllib.request

import dagster as dg

from mlops_assets.defs.keys import drift_report_key
from mlops_assets.demo.simulator import simulate_batch
from mlops_assets_tests.test_monitoring.conftest import champion, serve_rows


def _check(result):
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "drift"]
    return check


def test_drifted_traffic_fails_the_check_with_the_report_linked(server_env):
    env = server_env
    spec = champion(env)

    empty = env.run([drift_report_key("churn")])
    assert empty.success
    check = _check(empty)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "skipped: 0 logged row(s)" in check.description

    serve_rows(env, spec, "covariate_shift", 400)
    result = env.run([drift_report_key("churn")])
    assert result.success
    mat = env.instance.get_latest_materialization_event(drift_report_key("churn"))
    meta = {k: v.value for k, v in mat.asset_materialization.metadata.items()}
    assert meta["window_rows"] == 400
    assert meta["drift_share"] >= 0.5 and meta["drifted_columns"] >= 3
    assert meta["serving_version"] == "1"
    assert meta["reference_commit"] == env.store(spec).head("main")
    assert "| plan |" in meta["columns"]
    with open(meta["report"], encoding="utf-8") as f:
        html = f.read()
    assert "<html" in html.lower()
    # the same report over HTTP, kept as a run of the monitoring experiment, linked both ways
    with urllib.request.urlopen(meta["report_url"], timeout=10) as r:
        assert r.read().decode("utf-8") == html
    run_id = meta["report_run_url"].rsplit("/", 1)[1]
    run = env.client().get_run(run_id)
    assert run.data.tags["mlops.model_version"] == "1"
    assert run.data.metrics["drift_share"] == meta["drift_share"]
    assert meta["model_version_url"].endswith("/versions/1")
    check = _check(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert "features drifted" in check.description


def _tick(env, spec, cursor=None, cooldown=1800):
    from mlops_assets.defs.monitoring.sensors import build_drift_sensor

    sensor = build_drift_sensor(spec, cooldown_seconds=cooldown)
    context = dg.build_sensor_context(instance=env.instance, cursor=cursor)
    result = sensor(context)
    return result, context.cursor


def _observe_new_batch(env, spec) -> str:
    """A new day lands on main and Dagster observes it (as `mlops ingest` reports it)."""
    from mlops_assets.defs.data.assets import report_main_commit
    from mlops_assets.demo.simulator import to_csv_bytes
    from mlops_assets.ingest import ingest_batch

    store = env.store(spec)
    batch = to_csv_bytes(simulate_batch(spec.simulator, dt.date(2026, 11, 21), rows=250))
    assert ingest_batch(store, spec, batch, "day-new").published
    report_main_commit(env.instance, spec.name, store.head("main"), {})
    return store.head("main")


def test_drift_sensor_requests_one_tagged_retraining_and_respects_the_cooldown(
    server_env, monkeypatch
):
    from mlops_assets.defs.data.assets import report_main_commit
    from mlops_assets.defs.monitoring import sensors

    env = server_env
    spec = champion(env)
    report_main_commit(env.instance, spec.name, env.store(spec).head("main"), {})

    result, cursor = _tick(env, spec)
    assert isinstance(result, dg.SkipReason) and "drift: the check has not run yet" in str(
        result.skip_message
    )

    assert env.run([drift_report_key("churn")]).success  # empty window: skipped, WARN
    result, cursor = _tick(env, spec, cursor)
    assert isinstance(result, dg.SkipReason) and "does not call for retraining" in str(
        result.skip_message
    )

    # drifted traffic, but no data the model has not learned: retraining would reproduce it
    serve_rows(env, spec, "covariate_shift", 400)
    assert env.run([drift_report_key("churn")]).success  # ERROR: drifted
    result, cursor = _tick(env, spec, cursor)
    assert isinstance(result, dg.SkipReason)
    assert "already learned main's head" in result.skip_message

    # a new batch lands: the automation trains on it, the drift sensor leaves it alone...
    _observe_new_batch(env, spec)
    assert env.run([drift_report_key("churn")]).success
    result, cursor = _tick(env, spec, cursor)
    assert isinstance(result, dg.SkipReason) and "the automation retrains on it" in str(
        result.skip_message
    )

    # ...unless the automation has not picked it up in time: then the drift sensor retrains
    monkeypatch.setattr(sensors, "AUTOMATION_GRACE_SECONDS", 0)
    assert env.run([drift_report_key("churn")]).success
    result, cursor = _tick(env, spec, cursor)
    assert isinstance(result, dg.RunRequest), result
    assert result.run_key.startswith("drift-churn-")
    assert {k.to_user_string() for k in result.asset_selection} == {
        "churn/dataset",
        "churn/features",
        "churn/trained_model",
        "churn/model_evaluation",
        "churn/deployment",
    }
    assert result.tags["mlops/trigger"] == "drift"
    assert result.tags["mlops/model"] == "churn"
    assert float(result.tags["mlops/drift_share"]) >= 0.5
    assert result.tags["mlops/report"].endswith(".html")
    assert "features drifted" in result.tags["mlops/check"]

    again, cursor = _tick(env, spec, cursor)  # the same evidence: no second run
    assert isinstance(again, dg.SkipReason) and "drift: no new evaluation" in again.skip_message

    assert env.run([drift_report_key("churn")]).success  # still drifted, within the cooldown
    storm, _ = _tick(env, spec, cursor)
    assert isinstance(storm, dg.SkipReason) and "cooldown" in storm.skip_message
    after, _ = _tick(env, spec, cursor, cooldown=0)  # past the cooldown: a new run
    assert isinstance(after, dg.RunRequest) and after.run_key != result.run_key
