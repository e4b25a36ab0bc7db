"""A classifier's decision threshold is part of the model: chosen by the spec's rule on a
validation slice of the train split (never the holdout), kept inside the model, used by every
label it gives."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlops_assets.demo.simulator import simulate_batch
from mlops_assets.featurize import SPLIT, build_features
from mlops_assets.specs.model import ThresholdSpec, get_spec, load_spec_file
from mlops_assets.training.train import (
    TrainingError,
    best_threshold,
    decision_threshold,
    fit,
    inputs,
    score,
    threshold_scores,
)
from mlops_assets_tests.test_specs import GOOD

END = dt.date(2027, 6, 15)


def _features(spec, days: int = 6, rows: int = 250) -> pd.DataFrame:
    frames = [simulate_batch("churn", END - dt.timedelta(days=i), rows=rows) for i in range(days)]
    return build_features(pd.concat(frames, ignore_index=True), spec)


def _with_threshold(spec, threshold):
    return spec.model_copy(update={"threshold": ThresholdSpec.model_validate(threshold)})


@pytest.mark.parametrize(
    ("text", "fixed", "maximize"),
    [("", 0.5, None), ("threshold: 0.3\n", 0.3, None), ("threshold: {maximize: f2}\n", None, "f2")],
)
def test_the_spec_says_how_the_threshold_is_chosen(tmp_path, text, fixed, maximize):
    path = tmp_path / "fraud.yaml"
    path.write_text(GOOD.format(key="id") + text)
    rule = load_spec_file(path).threshold
    assert (rule.value if rule.fixed is None and fixed == 0.5 else rule.fixed) == fixed
    assert rule.maximize == maximize


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("threshold: 1.5\n", r"threshold.fixed: .*less than 1"),
        ("threshold: {maximize: precision}\n", r"threshold.maximize: .*'f1'"),
        ("threshold: {fixed: 0.3, maximize: f1}\n", r"threshold: .*not both"),
    ],
)
def test_a_bad_threshold_rule_names_its_field(tmp_path, text, message):
    path = tmp_path / "fraud.yaml"
    path.write_text(GOOD.format(key="id") + text)
    with pytest.raises(ValueError, match=message):
        load_spec_file(path)


def test_a_regression_spec_has_no_threshold(tmp_path):
    path = tmp_path / "demand.yaml"
    path.write_text(
        GOOD.format(key="id")
        .replace("task: classification", "task: regression")
        .replace("{dtype: int, allowed: [0, 1]}", "{dtype: float}")
        .replace("metric: roc_auc", "metric: r2")
        + "threshold: 0.3\n"
    )
    with pytest.raises(ValueError, match="threshold applies to classification only"):
        load_spec_file(path)


@pytest.mark.parametrize("metric", ["f1", "f2", "balanced_accuracy", "accuracy", "matthews"])
def test_the_threshold_grid_scores_as_scikit_learn_does(metric):
    from sklearn import metrics as skm

    sk = {
        "f1": lambda y, p: skm.f1_score(y, p, zero_division=0),
        "f2": lambda y, p: skm.fbeta_score(y, p, beta=2, zero_division=0),
        "balanced_accuracy": skm.balanced_accuracy_score,
        "accuracy": skm.accuracy_score,
        "matthews": skm.matthews_corrcoef,
    }[metric]
    rng = np.random.default_rng(1)
    q = rng.random(500) ** 2
    y = (rng.random(500) < q).astype(int)
    grid = np.array([0.05, 0.3, 0.5, 0.8, 0.99])
    ours = threshold_scores(metric, y, q, grid)
    assert np.allclose(ours, [sk(y, q >= t) for t in grid]), metric


def test_best_threshold_maximises_the_metric_and_prefers_one_near_half():
    rng = np.random.default_rng(0)
    q = rng.random(4000) ** 3  # calibrated probabilities of a rare class
    y = (rng.random(4000) < q).astype(int)
    t = best_threshold("f1", y, q)
    assert 0.1 < t < 0.45  # F1 cuts well below 0.5 when positives are rare
    assert abs(best_threshold("accuracy", y, q) - 0.5) <= 0.1  # accuracy: at 0.5, as it should
    # a perfectly separated sample: every cut between the classes is as good; 0.5 is chosen
    assert best_threshold("f1", np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.5


def test_the_threshold_is_chosen_on_the_train_split_never_the_holdout():
    spec = get_spec("churn")
    features = _features(spec)
    trained = fit(features, spec, spec.model)
    # flip every holdout label: if the holdout took any part in the choice, it would move
    flipped = features.copy()
    hold = flipped[SPLIT] == "holdout"
    flipped.loc[hold, spec.target] = 1 - flipped.loc[hold, spec.target]
    assert fit(flipped, spec, spec.model).threshold == trained.threshold
    assert trained.threshold < 0.5 and trained.threshold_rule.startswith("maximize f1")


def test_the_model_answers_at_its_threshold_and_the_gate_scores_it_there():
    spec = get_spec("churn")
    features = _features(spec)
    trained = fit(features, spec, spec.model)
    model = trained.pipeline
    x = inputs(features[features[SPLIT] == "holdout"], spec)
    y = features.loc[features[SPLIT] == "holdout", spec.target]
    p = model.predict_proba(x)[:, 1]
    assert decision_threshold(model) == trained.threshold
    assert (model.predict(x) == (p >= trained.threshold)).all()
    assert score(model, x, y, spec) == trained.metrics
    # at 0.5 the same forest finds fewer churners: F1 is worse, which is why it is chosen
    at_half = fit(features, _with_threshold(spec, 0.5), spec.model)
    assert at_half.threshold == 0.5 and decision_threshold(at_half.pipeline) == 0.5
    assert at_half.metrics["roc_auc"] == trained.metrics["roc_auc"]
    assert at_half.metrics["f1"] < trained.metrics["f1"]


def test_a_model_from_before_thresholds_answers_at_half():
    class Legacy:  # a pipeline logged before the threshold was part of the model
        pass

    assert decision_threshold(Legacy()) == 0.5


def test_too_few_of_a_class_to_choose_a_threshold_says_what_to_do():
    spec = get_spec("churn")
    features = _features(spec, days=1, rows=120)
    train = features[SPLIT] == "train"
    rare = features.index[train & (features[spec.target] == 1)][3:]
    features = features.drop(index=rare)  # three churners left in the train split
    with pytest.raises(TrainingError, match=r"3 training row\(s\) of its rarest class.*0\.5"):
        fit(features, spec, spec.model)
