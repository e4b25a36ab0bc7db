"""Multiclass classification from data to gate, without servers: the spec's task, the four
metrics, the gate on each of them, the errors a bad target gets, live performance and drift on
a multiclass model's answers, and the ONNX fallback.

Two data sets: scikit-learn's bundled wine data (three cultivars, integer labels), written as
the test's own CSV batches and ingested through write-audit-publish, and the demo's ``tickets``
simulator (three teams, text labels).
"""

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_assets.demo import DEMO_SPECS_DIR
from mlops_assets.demo.simulator import simulate_batch, to_csv_bytes
from mlops_assets.featurize import build_features
from mlops_assets.ingest import ingest_batch
from mlops_assets.quality import read_dataset
from mlops_assets.specs import ModelSpec
from mlops_assets.specs.model import load_spec_file
from mlops_assets.store.local import LocalStore
from mlops_assets.training import gate
from mlops_assets.training.train import TrainingError, classes, fit, predictions

DAY0 = dt.date(2026, 11, 1)


def tickets_spec() -> ModelSpec:
    return load_spec_file(DEMO_SPECS_DIR / "tickets.yaml")


def wine_frame() -> pd.DataFrame:
    """scikit-learn's wine data with a key and a date, its target named ``cultivar``."""
    from sklearn.datasets import load_wine

    bunch = load_wine(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "cultivar"})
    frame.columns = [c.replace("/", "_") for c in frame.columns]  # od280/od315_of_...
    frame.insert(0, "wine_id", [f"W{i:04d}" for i in range(len(frame))])
    days = [DAY0 + dt.timedelta(days=i % 3) for i in range(len(frame))]
    frame.insert(1, "tasted_on", [d.isoformat() for d in days])
    return frame


def wine_spec_data(frame: pd.DataFrame, metric: str = "f1_macro", floor: float = 0.8) -> dict:
    """A spec for the wine data, as a person would write it after looking at the data."""
    features = [c for c in frame.columns if c not in ("wine_id", "tasted_on", "cultivar")]
    columns: dict = {"wine_id": {"dtype": "string"}, "tasted_on": {"dtype": "date"}}
    for c in features:
        lo, hi = float(frame[c].min()), float(frame[c].max())
        columns[c] = {"dtype": "float", "min": round(lo - abs(lo) * 0.5, 3), "max": hi * 2}
    columns["cultivar"] = {"dtype": "int", "allowed": [0, 1, 2]}
    return {
        "name": "wine",
        "description": "Which of three cultivars a wine comes from (scikit-learn's wine data).",
        "task": "multiclass",
        "dataset": {
            "repository": "wine",
            "prefix": "batches/",
            "key": "wine_id",
            "timestamp": "tasted_on",
            "min_rows": 50,
            "columns": columns,
        },
        "target": "cultivar",
        "features": features,
        "split": {"holdout_fraction": 0.3, "seed": 7},
        "model": {"estimator": "random_forest", "n_estimators": 60, "random_state": 0},
        "evaluation": {"metric": metric, "floor": floor, "tolerance": 0.03},
    }


def write_wine_spec(folder: Path, **kw) -> ModelSpec:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "wine.yaml"
    path.write_text(yaml.safe_dump(wine_spec_data(wine_frame(), **kw), sort_keys=False))
    return load_spec_file(path)


def ingest_wine(store, spec: ModelSpec) -> str:
    """The wine data as one CSV batch per day, each through write-audit-publish."""
    frame = wine_frame()
    for day, part in frame.groupby("tasted_on"):
        result = ingest_batch(store, spec, to_csv_bytes(part), f"day-{day}")
        assert result.published, result.summary()
    return store.head("main")


@pytest.fixture
def wine(tmp_path):
    spec = write_wine_spec(tmp_path / "specs")
    store = LocalStore(tmp_path / "store", spec.dataset.repository)
    head = ingest_wine(store, spec)
    dataset, _, _ = read_dataset(store, spec.dataset, head)
    return spec, build_features(dataset, spec)


def tickets_features(days: int = 6, rows: int = 250, end: dt.date = dt.date(2026, 11, 30)):
    spec = tickets_spec()
    frames = [simulate_batch("tickets", end - dt.timedelta(days=i), rows=rows) for i in range(days)]
    return spec, build_features(pd.concat(frames, ignore_index=True), spec)


# ---- the spec ------------------------------------------------------------------------------


def test_a_multiclass_spec_has_its_own_metrics_and_no_threshold(tmp_path):
    spec = tickets_spec()
    assert spec.task == "multiclass"
    assert spec.metrics == ("accuracy", "f1_macro", "roc_auc_ovr", "log_loss")
    data = yaml.safe_load((DEMO_SPECS_DIR / "tickets.yaml").read_text())

    def refused(change: dict, match: str) -> None:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**data, **change}))
        with pytest.raises(ValueError, match=match) as e:
            load_spec_file(path)
        assert str(path) in str(e.value)

    refused({"evaluation": {"metric": "roc_auc", "floor": 0.7}}, "not a multiclass metric")
    refused(
        {"threshold": {"maximize": "f1"}},
        r"threshold applies to classification only \(two classes\), not multiclass",
    )
    columns = {**data["dataset"]["columns"], "team": {"dtype": "float"}}
    refused({"dataset": {**data["dataset"], "columns": columns}}, "must be an int, string or")


def test_the_demo_spec_is_opt_in_beside_the_packaged_ones():
    from mlops_assets.specs.model import SPECS_DIR, load_specs

    packaged = {s.name for s in load_specs(str(SPECS_DIR))}
    both = {s.name for s in load_specs(f"{SPECS_DIR}:{DEMO_SPECS_DIR}")}
    assert "tickets" not in packaged
    assert both == packaged | {"tickets"}


# ---- training and the gate -----------------------------------------------------------------


def test_wine_from_csv_batches_trains_to_four_metrics(wine):
    spec, features = wine
    trained = fit(features, spec, spec.model)
    m = trained.metrics
    assert set(m) == {"accuracy", "f1_macro", "roc_auc_ovr", "log_loss"}
    # the wine cultivars are well separated: a forest gets nearly all of the holdout right
    assert m["accuracy"] > 0.85 and m["f1_macro"] > 0.85 and m["roc_auc_ovr"] > 0.95, m
    assert 0 < m["log_loss"] < 0.5, m
    assert trained.threshold is None  # no decision threshold: the most probable class wins
    assert classes(trained.pipeline) == [0, 1, 2]
    hold = features[features["split"] == "holdout"]
    answered = predictions(trained.pipeline, hold, spec)
    assert set(answered.tolist()) <= {0, 1, 2}
    # accuracy is what the answers say, computed here by hand
    assert m["accuracy"] == pytest.approx(
        (answered == hold["cultivar"].to_numpy()).mean(), abs=1e-6
    )


def test_tickets_train_with_text_labels_and_deterministically():
    spec, features = tickets_features()
    first = fit(features, spec, spec.model)
    again = fit(features, spec, spec.model)
    assert first.metrics == again.metrics
    assert classes(first.pipeline) == ["account", "billing", "technical"]
    assert first.metrics["roc_auc_ovr"] >= spec.evaluation.floor + 0.075, first.metrics


@pytest.mark.parametrize(
    "metric,champion,challenger,promote",
    [
        ("accuracy", 0.90, 0.88, True),  # within 3 %
        ("f1_macro", 0.90, 0.80, False),  # more than 3 % worse
        ("roc_auc_ovr", None, 0.70, False),  # under the floor 0.75
        ("log_loss", 0.40, 0.41, True),  # an error: a little higher is within 3 %
        ("log_loss", 0.40, 0.50, False),  # 25 % higher: refused
        ("log_loss", None, 0.90, False),  # over the floor (the highest loss allowed): refused
    ],
)
def test_the_gate_decides_on_any_multiclass_metric(metric, champion, challenger, promote):
    floor = {"accuracy": 0.5, "f1_macro": 0.5, "roc_auc_ovr": 0.75, "log_loss": 0.8}[metric]
    decision = gate.decide(metric, challenger, champion, floor, 0.03)
    assert decision.promote is promote, decision.reason


def _relabel(features: pd.DataFrame, target: str, rows, value) -> pd.DataFrame:
    out = features.copy()
    out.loc[rows, target] = value
    return out


def test_a_target_with_one_class_is_refused_naming_it(wine):
    spec, features = wine
    with pytest.raises(TrainingError, match=r"target 'cultivar' has a single class \(1\)"):
        fit(features.assign(cultivar=1), spec, spec.model)


def test_a_class_missing_from_the_holdout_is_refused_naming_it(wine):
    spec, features = wine
    hold = features["split"] == "holdout"
    # every holdout row of cultivar 2 becomes cultivar 1: the gate could not judge class 2
    changed = _relabel(features, "cultivar", hold & (features["cultivar"] == 2), 1)
    with pytest.raises(TrainingError, match=r"class\(es\) \[2\] are missing from the") as e:
        fit(changed, spec, spec.model)
    assert "raise split.holdout_fraction" in str(e.value)
    # a class only the holdout has: the model could never answer it
    changed = _relabel(features, "cultivar", hold & (features["cultivar"] == 2), 3)
    changed = _relabel(changed, "cultivar", ~hold & (changed["cultivar"] == 2), 1)
    with pytest.raises(TrainingError, match=r"class\(es\) \[3\] are in the holdout but not"):
        fit(changed, spec, spec.model)


def test_a_binary_spec_on_a_three_class_target_says_to_use_multiclass(wine):
    spec, features = wine
    binary = spec.model_copy(update={"task": "classification"})
    with pytest.raises(TrainingError, match="set task: multiclass"):
        fit(features, binary, spec.model)


def test_a_multiclass_model_is_not_compiled_and_says_why(wine):
    from mlops_assets.training.onnx_export import convert

    spec, features = wine
    trained = fit(features, spec, spec.model)
    conversion = convert(trained.pipeline, spec)
    assert not conversion.ok
    assert conversion.tags()["onnx.conversion"] == "failed"
    assert "skops model serves them" in conversion.reason


# ---- live performance and labels ------------------------------------------------------------


def _served(model, frame: pd.DataFrame, spec: ModelSpec):
    """What the server answers and logs per row: the class and {class: P(class)}."""
    from mlops_assets.training.train import inputs

    proba = model.predict_proba(inputs(frame, spec))
    names = [str(c) for c in classes(model)]
    return predictions(model, frame, spec), [dict(zip(names, p, strict=True)) for p in proba]


def test_live_performance_scores_the_logged_answers_like_the_gate(wine):
    from mlops_assets.monitoring.performance import assess_window, live_score

    spec, features = wine
    trained = fit(features, spec, spec.model)
    hold = features[features["split"] == "holdout"]
    labels, probability = _served(trained.pipeline, hold, spec)
    window = pd.DataFrame(
        {"label": hold["cultivar"].tolist(), "prediction": labels, "probability": probability}
    )
    for metric in spec.metrics:
        metric_spec = spec.model_copy(
            update={"evaluation": spec.evaluation.model_copy(update={"metric": metric})}
        )
        live = live_score(metric_spec, window["label"], window["prediction"], window["probability"])
        assert live == pytest.approx(trained.metrics[metric], abs=1e-5), metric
    # the gate's metric on the window, with its bootstrap error (log loss: never a perfect 0)
    by_loss = spec.model_copy(
        update={"evaluation": spec.evaluation.model_copy(update={"metric": "log_loss"})}
    )
    judged = assess_window(by_loss, window, trained.metrics["log_loss"], "1", 10, 0.03)
    assert judged.rows == len(hold) and not judged.worse and judged.se > 0
    assert judged.live == pytest.approx(trained.metrics["log_loss"], abs=1e-5)
    # labels that arrive as JSON floats are the same classes
    as_floats = live_score(spec, window["label"].astype(float), labels, probability)
    assert as_floats == pytest.approx(trained.metrics["f1_macro"], abs=1e-5)


def test_a_label_the_model_never_saw_is_an_error_naming_it(wine, tmp_path):
    from mlops_assets.monitoring.labels import commit_labels
    from mlops_assets.monitoring.performance import PerformanceInputError, live_score

    spec, features = wine
    trained = fit(features, spec, spec.model)
    hold = features[features["split"] == "holdout"].head(5)
    labels, probability = _served(trained.pipeline, hold, spec)
    truth = [*hold["cultivar"].tolist()[:4], 7]
    with pytest.raises(PerformanceInputError, match=r"label\(s\) \['7'\] .* row 4") as e:
        live_score(spec, truth, labels, probability)
    assert "the spec allows [0, 1, 2]" in str(e.value)
    # and the labels contract refuses it before anything is committed
    store = LocalStore(tmp_path / "labels", "wine-predictions")
    rows = [{"request_id": "r1", "row": i, "label": v} for i, v in enumerate(truth)]
    with pytest.raises(ValueError, match=r"label 7 \(request 'r1', row 4\)"):
        commit_labels(store, spec, rows)
    store.ensure_repository()
    assert store.list("main", "labels/") == []
    assert commit_labels(store, spec, rows[:4]) is not None


def test_roc_auc_ovr_live_needs_every_class_and_says_so(wine):
    from mlops_assets.monitoring.performance import PerformanceInputError, live_score

    spec, features = wine
    spec = spec.model_copy(
        update={"evaluation": spec.evaluation.model_copy(update={"metric": "roc_auc_ovr"})}
    )
    trained = fit(features, spec, spec.model)
    hold = features[(features["split"] == "holdout") & (features["cultivar"] != 2)]
    labels, probability = _served(trained.pipeline, hold, spec)
    with pytest.raises(PerformanceInputError, match=r"every class .* none are \['2'\]"):
        live_score(spec, hold["cultivar"], labels, probability)


# ---- drift on the answers ------------------------------------------------------------------


def test_drift_compares_the_predicted_class_and_each_probability():
    from mlops_assets.monitoring.drift import PREDICTION, compute_drift
    from mlops_assets.training.train import inputs

    spec, features = tickets_features()
    trained = fit(features, spec, spec.model)
    model = trained.pipeline
    train = features[features["split"] == "train"]
    reference = inputs(train, spec)
    labels, probability = _served(model, train, spec)
    reference[PREDICTION] = labels
    for c in classes(model):
        reference[f"probability_{c}"] = [p[c] for p in probability]

    def window(drift: str) -> pd.DataFrame:
        frame = simulate_batch("tickets", dt.date(2026, 12, 10), rows=400, drift=drift)
        current = inputs(frame, spec)
        answered, proba = _served(model, frame, spec)
        current[PREDICTION] = answered
        for c in classes(model):
            current[f"probability_{c}"] = [p[c] for p in proba]
        return current

    stable = compute_drift(reference, window("none"), spec, html=False)
    shifted = compute_drift(reference, window("covariate_shift"), spec, html=False)
    for result in (stable, shifted):
        assert result.prediction is not None
        # the class is compared as a category, each probability as a number
        assert "Jensen-Shannon" in result.prediction.method or "chi" in result.prediction.method
        assert {c.column for c in result.probabilities} == {
            "probability_account",
            "probability_billing",
            "probability_technical",
        }
        assert len(result.features) == len(spec.features)  # answers are not features
    assert not stable.prediction.drifted and stable.drift_share < 0.5, stable.table()
    # shifted inputs move the answers: more technical tickets, drawn from more error codes
    assert shifted.prediction.drifted, shifted.table()
    assert sum(c.drifted for c in shifted.probabilities) >= 2, shifted.table()
    assert shifted.drift_share >= 0.5


def test_the_reference_of_a_multiclass_version_has_its_class_and_probabilities(tmp_path):
    from mlops_assets.monitoring.drift import reference_frame

    spec = tickets_spec()
    store = LocalStore(tmp_path / "store", spec.dataset.repository)
    for i in range(4):
        day = DAY0 + dt.timedelta(days=i)
        batch = to_csv_bytes(simulate_batch("tickets", day, rows=200))
        assert ingest_batch(store, spec, batch, f"day-{day}").published
    head = store.head("main")
    dataset, _, _ = read_dataset(store, spec.dataset, head)
    model = fit(build_features(dataset, spec), spec, spec.model).pipeline
    reference = reference_frame(store, spec, head, model)
    proba = reference[[f"probability_{c}" for c in classes(model)]].to_numpy()
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert set(reference["prediction"]) <= {"account", "billing", "technical"}
    best = np.asarray(classes(model))[proba.argmax(axis=1)]
    assert (best == reference["prediction"].to_numpy()).all()
    assert not np.isnan(proba).any()
