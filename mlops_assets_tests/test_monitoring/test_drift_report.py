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


def _check(result):
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "drift"]
    return check


def test_drifted_traffic_fails_the_check_with_the_report_linked(server_env):
    env = server_env
    spec = env.spec("churn")
    env.seed(spec)
    keys = [
        dataset_key("churn"),
        features_key("churn"),
        trained_model_key("churn"),
        model_evaluation_key("churn"),
    ]
    assert env.run(keys).success

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
