"""The drift_report asset: reference from the serving version's lineage, current window from
the committed prediction log."""

import datetime as dt

import dagster as dg

from mlops_assets.defs.data.assets import dataset_key
from mlops_assets.defs.features.assets import features_key
from mlops_assets.defs.monitoring.assets import drift_report_key
from mlops_assets.defs.training.assets import model_evaluation_key, trained_model_key
from mlops_assets.serving.predlog import PredictionLog, predictions_repository, store_committer
from mlops_assets.simulator import simulate_batch
from mlops_assets.store.local import LocalStore
from mlops_assets.training.train import inputs, predictions


def _serve(env, spec, drift: str, rows: int) -> None:
    """What the server would log: rows answered by the production version."""
    tracking = env.tracking()
    version = tracking.version_by_alias(spec.model_name, "production").version
    model = tracking.load_model(spec.model_name, version)
    frame = simulate_batch(spec.simulator, dt.date(2026, 11, 20), rows=rows, drift=drift)
    x = inputs(frame, spec)
    values = predictions(model, frame, spec)
    store = LocalStore(
        env.data_dir / "lakefs-local", predictions_repository(spec.dataset.repository)
    )
    log = PredictionLog(
        env.data_dir / "serving-log",
        commit=store_committer(lambda _: store, {spec.name: store.repository}),
    )
    columns = {c: [None if v != v else v for v in x[c].tolist()] for c in spec.features}
    log.append(
        spec.name,
        version,
        "req-1",
        columns,
        {"prediction": (values >= 0.5).astype(int).tolist(), "probability": values.tolist()},
    )
    log.close()


def _champion(env):
    """Seed churn and train, gate and register its first (production) version."""
    spec = env.spec("churn")
    env.seed(spec)
    keys = [
        dataset_key("churn"),
        features_key("churn"),
        trained_model_key("churn"),
        model_evaluation_key("churn"),
    ]
    assert env.run(keys).success
    return spec


def _check(result):
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "drift"]
    return check


def test_drifted_traffic_fails_the_check_with_the_report_linked(server_env):
    env = server_env
    spec = _champion(env)

    empty = env.run([drift_report_key("churn")])
    assert empty.success
    check = _check(empty)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "skipped: 0 logged row(s)" in check.description

    _serve(env, spec, "covariate_shift", 400)
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
        assert "<html" in f.read().lower()
    check = _check(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert "features drifted" in check.description


def _tick(env, spec, cursor=None, cooldown=1800):
    from mlops_assets.defs.monitoring.sensors import build_drift_sensor

    sensor = build_drift_sensor(spec, cooldown_seconds=cooldown)
    context = dg.build_sensor_context(instance=env.instance, cursor=cursor)
    result = sensor(context)
    return result, context.cursor


def test_drift_sensor_requests_one_tagged_retraining_and_respects_the_cooldown(server_env):
    env = server_env
    spec = _champion(env)

    result, cursor = _tick(env, spec)
    assert isinstance(result, dg.SkipReason) and "not run yet" in result.skip_message

    assert env.run([drift_report_key("churn")]).success  # empty window: skipped, WARN
    result, cursor = _tick(env, spec, cursor)
    assert (
        isinstance(result, dg.SkipReason) and "does not call for retraining" in result.skip_message
    )

    _serve(env, spec, "covariate_shift", 400)
    assert env.run([drift_report_key("churn")]).success  # ERROR: drifted
    result, cursor = _tick(env, spec, cursor)
    assert isinstance(result, dg.RunRequest)
    assert result.run_key.startswith("drift-churn-")
    assert {k.to_user_string() for k in result.asset_selection} == {
        "churn/trained_model",
        "churn/model_evaluation",
        "churn/deployment",
    }
    assert result.tags["mlops/trigger"] == "drift"
    assert float(result.tags["mlops/drift_share"]) >= 0.5
    assert result.tags["mlops/drift_report"].endswith(".html")

    again, cursor = _tick(env, spec, cursor)  # the same evidence: no second run
    assert isinstance(again, dg.SkipReason) and "no new drift evaluation" in again.skip_message

    assert env.run([drift_report_key("churn")]).success  # still drifted, within the cooldown
    storm, _ = _tick(env, spec, cursor)
    assert isinstance(storm, dg.SkipReason) and "cooldown" in storm.skip_message
    after, _ = _tick(env, spec, cursor, cooldown=0)  # past the cooldown: a new run
    assert isinstance(after, dg.RunRequest) and after.run_key != result.run_key
