"""A binary target whose labels are not 0/1, from data to served answers, without servers:
the spec `mlops init` writes names the positive class; the model answers P(positive) and the
labels themselves, whether the positive class is the first or the second of its classes; the
gate's metrics, the decision threshold, the ONNX graph and batch scoring count that class.

scikit-learn's breast cancer data, its outcome as 0/1 (1 = malignant) and as labels: a
forest learns the same trees from either, so every answer must be the 0/1 model's.
"""

import numpy as np
import pandas as pd
import pytest

from mlops_assets.batch import score as batch_score
from mlops_assets.featurize import build_features
from mlops_assets.quality import type_columns
from mlops_assets.specs import ModelSpec
from mlops_assets.specs.infer import infer_spec
from mlops_assets.training import onnx_export
from mlops_assets.training.train import (
    TrainingError,
    best_threshold,
    classes,
    fit,
    positive_class,
    positive_column,
    predictions,
    split,
)

BASELINE = (1, 0)  # (malignant, benign)
LABELS = {
    "malignant/benign": ("malignant", "benign"),  # positive second in sorted order
    "cancer/healthy": ("cancer", "healthy"),  # positive first: P is predict_proba[:, 0]
    "2/1": (2, 1),  # integers that are not 0/1
}


def data(labels: tuple) -> pd.DataFrame:
    """The data as text cells (as a CSV gives them), the outcome ``diagnosis`` as ``labels``."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer(as_frame=True).frame
    d.columns = [c.replace(" ", "_") for c in d.columns]
    malignant = d.pop("target") == 0
    d.insert(0, "sample_id", [f"bc-{i:04d}" for i in range(len(d))])
    d.insert(1, "seen_on", "2026-11-01")
    d["diagnosis"] = np.where(malignant, *labels)
    return d.astype(str)


def trained(labels: tuple, **spec_fields):
    """The spec `mlops init` writes (with ``spec_fields`` on top), its features and its model."""
    text = data(labels)
    written = infer_spec("bc", text, "diagnosis", "bc.csv").spec
    written["model"]["n_estimators"] = 40
    spec = ModelSpec.model_validate({**written, **spec_fields})
    typed, bad = type_columns(text, spec.dataset)
    assert not bad
    features = build_features(typed, spec)
    return spec, features, fit(features, spec, spec.model)


@pytest.fixture(scope="module")
def baseline():
    return trained(BASELINE)


@pytest.mark.parametrize("labels", LABELS.values(), ids=LABELS.keys())
def test_the_model_answers_its_labels_and_p_positive(labels, baseline):
    base_spec, base_features, base = baseline
    spec, features, model = trained(labels)
    positive, negative = labels
    assert spec.positive_label == positive  # the minority: 37% of the rows are malignant
    assert positive_class(model.pipeline) == positive
    assert positive_column(model.pipeline) == classes(model.pipeline).index(positive)
    # the gate's metrics and P(positive) are the 0/1 model's, bit for bit
    assert model.metrics == base.metrics
    p = predictions(model.pipeline, features, spec)
    np.testing.assert_array_equal(p, predictions(base.pipeline, base_features, base_spec))
    x, _ = split(features, spec, "holdout")
    expected = np.where(p[features["split"] == "holdout"] >= 0.5, positive, negative)
    assert model.pipeline.predict(x).tolist() == expected.tolist()


def test_the_threshold_is_chosen_for_the_positive_class():
    """``maximize: f1`` counts the positive class, here the first of the model's classes."""
    from sklearn.model_selection import train_test_split

    from mlops_assets.training.pipeline import build_pipeline

    spec, features, model = trained(LABELS["cancer/healthy"], threshold={"maximize": "f1"})
    x, y = split(features, spec, "train")
    x_fit, x_val, y_fit, y_val = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=spec.model.random_state
    )
    probe = build_pipeline(spec, spec.model).fit(x_fit, y_fit)
    p_cancer = probe.predict_proba(x_val)[:, 0]
    assert list(probe.classes_) == ["cancer", "healthy"]
    chosen = best_threshold("f1", (y_val == "cancer").to_numpy(), p_cancer)
    other = best_threshold("f1", (y_val == "healthy").to_numpy(), 1 - p_cancer)
    assert model.threshold == chosen != other


@pytest.mark.parametrize("labels", LABELS.values(), ids=LABELS.keys())
def test_the_onnx_graph_answers_the_labels_and_passes_parity(labels):
    spec, features, model = trained(labels)
    conversion = onnx_export.convert(model.pipeline, spec)
    assert conversion.ok, conversion.reason
    predictor = onnx_export.OnnxPredictor(conversion.data)
    assert (predictor.classes_.tolist(), predictor.pos_label) == (
        sorted(labels, key=str),
        labels[0],
    )
    x, _ = split(features, spec, "holdout")
    parity = onnx_export.check_parity(model.pipeline, predictor, x, spec)
    assert parity.passed and parity.label_mismatches == 0, parity.reason
    assert predictor.predict(x).tolist() == model.pipeline.predict(x).tolist()
    np.testing.assert_allclose(
        predictor.predict_proba(x)[:, positive_column(predictor)],
        predictions(model.pipeline, features[features["split"] == "holdout"], spec),
        atol=1e-12,
    )


def test_batch_scoring_writes_the_labels_and_p_positive():
    spec, features, model = trained(LABELS["cancer/healthy"])
    rows = features.head(40)
    out = batch_score(model.pipeline, rows, spec, "1")
    assert set(out["prediction"]) == {"cancer", "healthy"}
    np.testing.assert_array_equal(out["probability"], predictions(model.pipeline, rows, spec))


def test_a_positive_class_missing_from_the_training_rows_names_the_field():
    text = data((2, 0))  # an int target read as 0/1 by default, but holding 0 and 2
    written = infer_spec("bc", text, "diagnosis", "bc.csv").spec
    written["dataset"]["columns"]["diagnosis"] = {"dtype": "int"}
    written.pop("positive_class")
    spec = ModelSpec.model_validate(written)
    typed, _ = type_columns(text, spec.dataset)
    with pytest.raises(
        TrainingError,
        match=r"target 'diagnosis' has the classes \[0, 2\] in the training rows, and the "
        r"positive class 1 is not one of them: set positive_class",
    ):
        fit(build_features(typed, spec), spec, spec.model)
