"""Live performance: served rows joined to labels that arrive later, scored with the gate's
metric and held to the band around the evaluated score; a failing band requests retraining."""

import dagster as dg
import numpy as np
import pytest

from mlops_assets.defs.data.assets import report_main_commit
from mlops_assets.defs.keys import production_performance_key
from mlops_assets.monitoring.labels import commit_labels, labels_repository
from mlops_assets.monitoring.performance import (
    PerformanceInputError,
    bootstrap_se,
    compare,
    live_score,
)
from mlops_assets.specs.model import get_spec
from mlops_assets.store.local import LocalStore
from mlops_assets_tests.test_monitoring.conftest import champion, serve_rows

CHURN = get_spec("churn")
DEMAND = get_spec("demand")


@pytest.mark.parametrize(
    ("spec", "live", "expected", "worse", "better"),
    [
        (CHURN, 0.80, 0.80, False, False),
        (CHURN, 0.78, 0.80, False, False),  # -2.5%: inside ±3%
        (CHURN, 0.77, 0.80, True, False),  # -3.75%
        (CHURN, 0.83, 0.80, False, True),  # +3.75%: suspicious, not a retraining
        (DEMAND, 0.60, 0.70, True, False),  # r2: higher is better
    ],
)
def test_the_band_is_relative_and_knows_which_side_is_worse(spec, live, expected, worse, better):
    result = compare(spec, live, expected, rows=500, tolerance=0.03)
    assert (result.worse, result.better) == (worse, better)
    assert f"{live:.4f}" in result.describe() and "500 labelled" in result.describe()


def test_a_shortfall_within_sampling_error_warns_but_does_not_retrain():
    noisy = compare(CHURN, 0.76, 0.80, rows=100, tolerance=0.03, se=0.03)
    assert noisy.below_band and not noisy.worse
    assert "within twice the sampling error" in noisy.describe()
    assert compare(CHURN, 0.60, 0.80, rows=100, tolerance=0.03, se=0.03).worse


def test_errors_are_worse_when_they_grow():
    spec = DEMAND.model_copy(
        update={"evaluation": DEMAND.evaluation.model_copy(update={"metric": "rmse"})}
    )
    assert compare(spec, 11.0, 10.0, 100, 0.03).worse
    assert compare(spec, 9.0, 10.0, 100, 0.03).better


@pytest.mark.parametrize(
    ("y", "pred", "prob", "message"),
    [
        ([], [], [], "no labelled predictions"),
        ([1, np.nan], [1, 0], [0.9, 0.1], "1 label(s) and 0 prediction(s) are missing"),
        ([1, 1, 1], [1, 0, 1], [0.9, 0.2, 0.8], "needs both classes"),
        ([1, 0], [1, 0], None, "needs probabilities"),
    ],
)
def test_unscorable_windows_say_why(y, pred, prob, message):
    with pytest.raises(
        PerformanceInputError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        live_score(CHURN, np.array(y), np.array(pred), None if prob is None else np.array(prob))


def test_live_score_is_the_gate_metric():
    y = np.array([0, 0, 1, 1])
    assert live_score(CHURN, y, np.array([0, 1, 1, 1]), np.array([0.1, 0.6, 0.7, 0.9])) == 1.0
    assert live_score(DEMAND, np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]), None) == 1.0


def _labels(env, spec, frame, request_id):
    store = LocalStore(env.data_dir / "lakefs-local", labels_repository(spec))
    labels = [
        {"request_id": request_id, "row": i, "label": int(v)}
        for i, v in enumerate(frame[spec.target])
    ]
    return commit_labels(store, spec, labels)


def _performance(env):
    result = env.run([production_performance_key("churn")])
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    mat = env.instance.get_latest_materialization_event(production_performance_key("churn"))
    meta = {k: v.value for k, v in mat.asset_materialization.metadata.items()}
    return check, meta


def test_live_performance_joins_late_labels_and_a_broken_world_requests_retraining(
    server_env, monkeypatch
):
    from mlops_assets.defs.monitoring import sensors

    env = server_env
    # a holdout big enough that its score is a fair estimate (about 1,100 rows)
    spec = champion(env, days=14, rows=400)

    # predictions without labels yet: skipped, with the reason
    stable = serve_rows(env, spec, "none", 1500, request_id="req-stable", seed=3)
    check, meta = _performance(env)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "0 labelled row(s)" in check.description and "labels arrive later" in check.description

    # the labels arrive: the same world the model learned, within the band
    _labels(env, spec, stable, "req-stable")
    check, meta = _performance(env)
    assert meta["labelled_rows"] == 1500 and meta["serving_version"] == "1"
    evaluated = float(env.tracking().version(spec.model_name, "1").tags["gate.roc_auc"])
    assert meta["evaluated_roc_auc"] == pytest.approx(evaluated)
    assert check.passed, check.description
    assert "within the ±3% band" in check.description

    # the world's rules change (concept drift): live ROC AUC falls out of the band → ERROR
    broken = serve_rows(env, spec, "concept_drift", 1500, request_id="req-broken", seed=4)
    _labels(env, spec, broken, "req-broken")
    check, meta = _performance(env)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert meta["live_roc_auc"] < evaluated * 0.97
    assert "worse than the ±3% band" in check.description

    # the drift sensor turns the failing band into one tagged retraining (new data waiting)
    monkeypatch.setattr(sensors, "AUTOMATION_GRACE_SECONDS", 0)
    report_main_commit(env.instance, spec.name, "a-commit-the-model-has-not-seen", {})
    context = dg.build_sensor_context(instance=env.instance)
    request = sensors.build_drift_sensor(spec)(context)
    assert isinstance(request, dg.RunRequest), request
    assert request.tags["mlops/trigger"] == "performance"
    assert request.run_key.startswith("performance-churn-")
    assert float(request.tags["mlops/relative_change"]) < -0.03
    assert "worse than" in request.tags["mlops/check"]


def _labelled_spec(allowed: list, positive):
    column = CHURN.dataset.columns["churned"].model_copy(
        update={"dtype": "category", "allowed": tuple(allowed)}
    )
    columns = {**CHURN.dataset.columns, "churned": column}
    return CHURN.model_copy(
        update={
            "dataset": CHURN.dataset.model_copy(update={"columns": columns}),
            "positive_class": positive,
        }
    )


@pytest.mark.parametrize("metric", ["roc_auc", "f1", "accuracy"])
def test_text_labels_are_scored_for_the_positive_class(metric):
    """Labels that arrive as text score as their 0/1 twin (1 = the positive class), whether
    the positive class sorts first or second."""
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    pred = np.array([0, 1, 0, 0, 1, 1, 0, 1])
    proba = np.array([0.1, 0.8, 0.4, 0.3, 0.9, 0.6, 0.2, 0.7])  # P(positive)
    spec = CHURN.model_copy(
        update={"evaluation": CHURN.evaluation.model_copy(update={"metric": metric})}
    )
    expected = live_score(spec, y, pred, proba)
    for positive, negative in (("left", "stayed"), ("yes", "no")):
        text = _labelled_spec([negative, positive], positive).model_copy(
            update={"evaluation": spec.evaluation}
        )
        as_text = {0: negative, 1: positive}
        got = live_score(text, [as_text[v] for v in y], [as_text[v] for v in pred], proba)
        assert got == expected
    assert bootstrap_se(text, [as_text[v] for v in y], [as_text[v] for v in pred], proba) > 0


def test_a_text_label_that_is_neither_class_names_it():
    spec = _labelled_spec(["stayed", "left"], "left")
    with pytest.raises(
        PerformanceInputError,
        match=r"label 'gone' for target 'churned' \(row 1 of the labelled window\) is neither "
        r"the positive class 'left' nor the other class 'stayed'",
    ):
        live_score(spec, ["left", "gone"], ["left", "stayed"], [0.9, 0.2])
