"""Fit and score a model on the feature table's train and holdout splits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlops_assets.featurize import SPLIT
from mlops_assets.specs import Hyperparameters, ModelSpec

# numpy, pandas and scikit-learn are imported where they are used: loading the code location
# must stay fast (scikit-learn alone is about 1 s of imports).
if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from sklearn.pipeline import Pipeline


class TrainingError(ValueError):
    """The data cannot train this model; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Trained:
    pipeline: Pipeline  # for a classifier, the pipeline inside its decision threshold
    metrics: dict[str, float]
    train_rows: int
    holdout_rows: int
    threshold: float | None = None  # classifiers: P(positive) at or above which it is answered
    threshold_rule: str = ""  # how it was chosen, in words


def decision_threshold(model) -> float:
    """The P(positive) at or above which a classifier answers its positive class: the threshold
    chosen at training and kept in the model (0.5 for a model logged before thresholds were
    part of it)."""
    value = getattr(model, "threshold", None)
    return float(value) if isinstance(value, (int, float)) else 0.5


def positive_column(model) -> int:
    """Which ``predict_proba`` column of a binary classifier is P(positive): its ``pos_label``
    among its classes (a FixedThresholdClassifier's, or an ONNX predictor's). A model without
    one (trained before specs named a positive class) answers for its second class, 1."""
    label = getattr(model, "pos_label", None)
    if label is None:
        return 1
    found = classes(model)
    if label not in found:
        raise TrainingError(
            f"the model's positive class {label!r} is not one of its classes {found}"
        )
    return found.index(label)


def positive_class(model) -> object:
    """The class a binary classifier answers P(positive) of (1 for a model without classes)."""
    found = classes(model) if hasattr(model, "classes_") else [0, 1]
    return found[positive_column(model)]


def positive_probability(model, x: pd.DataFrame) -> np.ndarray:
    """P(positive) of a binary classifier for each row of ``x``."""
    import numpy as np

    return np.asarray(model.predict_proba(x), dtype="float64")[:, positive_column(model)]


def threshold_scores(metric: str, y: np.ndarray, probability: np.ndarray, grid: np.ndarray):
    """``metric`` of the labels ``probability >= t`` for every ``t`` in ``grid``, from the
    confusion counts at each cut (one pass, not one scikit-learn call per threshold)."""
    import numpy as np

    y = np.asarray(y).astype(bool)
    above = probability[None, :] >= grid[:, None]
    tp = (above & y).sum(axis=1).astype(float)
    fp = (above & ~y).sum(axis=1).astype(float)
    fn = y.sum() - tp
    tn = (~y).sum() - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric in ("f1", "f2"):
            b2 = 1.0 if metric == "f1" else 4.0
            out = (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp)
        elif metric == "balanced_accuracy":
            out = (tp / (tp + fn) + tn / (tn + fp)) / 2
        elif metric == "accuracy":
            out = (tp + tn) / len(y)
        else:  # matthews
            out = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return np.nan_to_num(out, nan=0.0)


def best_threshold(metric: str, y: np.ndarray, probability: np.ndarray) -> float:
    """The threshold on a 0.01 grid that maximises ``metric``, averaged over its neighbours
    within ±0.05: on a few hundred validation rows the raw curve is jagged, and its highest
    spike is often luck. Ties go to the threshold nearest 0.5."""
    import numpy as np

    grid = np.round(np.arange(0.01, 1.0, 0.01), 2)
    scores = threshold_scores(metric, y, np.asarray(probability, dtype=float), grid)
    window = 5
    smooth = np.convolve(np.pad(scores, window, mode="edge"), np.ones(2 * window + 1), "valid")
    best = np.flatnonzero(smooth >= smooth.max() - 1e-9)
    return float(grid[best[np.argmin(np.abs(grid[best] - 0.5))]])


def choose_threshold(
    spec: ModelSpec, params: Hyperparameters, x: pd.DataFrame, y: pd.Series
) -> float:
    """The spec's threshold rule applied to the train split only (the holdout stays unseen):
    a fixed value, or the one that maximises a metric on a validation slice of ``x``."""
    rule = spec.threshold
    if rule.maximize is None:
        return rule.value
    from sklearn.model_selection import train_test_split

    from mlops_assets.training.pipeline import build_pipeline, fit_or_explain

    smallest = int(y.value_counts().min())
    if smallest < 4:
        raise TrainingError(
            f"model {spec.name!r}: target {spec.target!r} has {smallest} training row(s) of its "
            f"rarest class, too few to choose a threshold on a validation slice: ingest more "
            "data, or set a fixed threshold in the spec (threshold: 0.5)"
        )
    x_fit, x_val, y_fit, y_val = train_test_split(
        x, y, test_size=rule.validation_fraction, stratify=y, random_state=params.random_state
    )
    probe = fit_or_explain(build_pipeline(spec, params), x_fit, y_fit, spec, params)
    column = classes(probe).index(spec.positive_label)
    p = probe.predict_proba(x_val)[:, column]
    return best_threshold(rule.maximize, (y_val == spec.positive_label).to_numpy(), p)


def inputs(frame: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """The model's input columns, in spec order, with the dtypes the pipeline was fit on."""
    missing = [c for c in spec.features if c not in frame.columns]
    if missing:
        raise TrainingError(f"model {spec.name!r}: input lacks feature columns {missing}")
    x = frame[list(spec.features)].copy()
    for col in spec.numeric_features:
        x[col] = x[col].astype("float64")
    for col in spec.categorical_features:
        # object, not pandas' string dtype: it is what a JSON request to the server becomes.
        # pandas-stubs' Scalar leaves out None, which pandas takes as the fill of an object column.
        x[col] = x[col].astype(object).where(x[col].notna(), None)  # type: ignore[call-overload]
    return x


def split(features: pd.DataFrame, spec: ModelSpec, which: str) -> tuple[pd.DataFrame, pd.Series]:
    part = features[features[SPLIT] == which]
    return inputs(part, spec), part[spec.target]


def score(pipeline: Pipeline, x: pd.DataFrame, y: pd.Series, spec: ModelSpec) -> dict[str, float]:
    """The task's metrics on ``(x, y)``: accuracy, F1, ROC AUC or RMSE, MAE, R²."""
    import numpy as np
    from sklearn import metrics as skm

    if spec.task == "multiclass":
        proba = pipeline.predict_proba(x)
        out = multiclass_scores(y, pipeline.predict(x), proba, classes(pipeline))
    elif spec.task == "classification":
        pred = pipeline.predict(x)
        positive = positive_class(pipeline)
        out = {
            "accuracy": skm.accuracy_score(y, pred),
            "f1": skm.f1_score(y, pred, pos_label=positive, zero_division=0),
        }
        out["roc_auc"] = (
            skm.roc_auc_score(y == positive, positive_probability(pipeline, x))
            if y.nunique() > 1
            else float("nan")
        )
    else:
        pred = pipeline.predict(x)
        out = {
            "rmse": float(np.sqrt(skm.mean_squared_error(y, pred))),
            "mae": skm.mean_absolute_error(y, pred),
            "r2": skm.r2_score(y, pred),
        }
    return {k: round(float(v), 6) for k, v in out.items()}


def classes(model) -> list:
    """A classifier's classes, in the order of its ``predict_proba`` columns."""
    import numpy as np

    found = getattr(model, "classes_", None)
    if found is None:
        raise TrainingError(f"{type(model).__name__} has no classes_: not a fitted classifier")
    return np.asarray(found).tolist()


def multiclass_scores(y, pred, proba, labels: list) -> dict[str, float]:
    """Accuracy, macro F1, one-vs-rest ROC AUC and log loss of a multiclass model whose
    ``predict_proba`` columns are ``labels``. ROC AUC is NaN (and so refused by a gate on it)
    when ``y`` lacks one of the classes: one-vs-rest needs every class among the answers."""
    import numpy as np
    from sklearn import metrics as skm

    y = np.asarray(y)
    proba = np.asarray(proba, dtype="float64")
    out = {
        "accuracy": skm.accuracy_score(y, pred),
        "f1_macro": skm.f1_score(y, pred, labels=labels, average="macro", zero_division=0),
        "roc_auc_ovr": (
            skm.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=labels)
            if set(labels) <= set(y.tolist())
            else float("nan")
        ),
        "log_loss": skm.log_loss(y, proba, labels=labels),
    }
    return {k: float(v) for k, v in out.items()}


def _check_classes(spec: ModelSpec, y_train: pd.Series, y_hold: pd.Series) -> None:
    """A classifier learns from every class and is judged on every class, or it is not trained:
    the error names the target, the class and what to do."""
    seen = sorted(y_train.unique().tolist(), key=str)
    where = f"model {spec.name!r}: target {spec.target!r}"
    if len(seen) < 2:
        raise TrainingError(
            f"{where} has a single class ({seen[0]!r}) in the {len(y_train)} training rows; a "
            "classifier needs at least two: check the data at this commit"
        )
    if spec.task == "classification" and len(seen) > 2:
        raise TrainingError(
            f"{where} has {len(seen)} classes ({', '.join(map(repr, seen[:10]))}), but the spec "
            "says task: classification (two classes): set task: multiclass and a multiclass "
            "evaluation.metric (accuracy, f1_macro, roc_auc_ovr or log_loss)"
        )
    if spec.task == "classification" and spec.positive_label not in seen:
        raise TrainingError(
            f"{where} has the classes {seen} in the training rows, and the positive class "
            f"{spec.positive_label!r} is not one of them: set positive_class in the spec to the "
            f"one that counts as positive, and list both in dataset.columns.{spec.target}.allowed"
        )
    if spec.task != "multiclass":
        return
    held = set(y_hold.unique().tolist())
    unseen = sorted(held - set(seen), key=str)
    if unseen:
        raise TrainingError(
            f"{where}: class(es) {unseen} are in the holdout but not in the training rows, so "
            "the model could never answer them: ingest more rows of those classes"
        )
    missing = [c for c in seen if c not in held]
    if missing:
        raise TrainingError(
            f"{where}: class(es) {missing} are missing from the {len(y_hold)} holdout rows, so "
            "the gate could not judge the model on them: ingest more rows of those classes or "
            "raise split.holdout_fraction"
        )


def fit(features: pd.DataFrame, spec: ModelSpec, params: Hyperparameters) -> Trained:
    """Fit on the ``train`` split, score on ``holdout``. Deterministic for the same inputs."""
    x_train, y_train = split(features, spec, "train")
    x_hold, y_hold = split(features, spec, "holdout")
    if len(x_train) == 0 or len(x_hold) == 0:
        raise TrainingError(
            f"model {spec.name!r}: {len(x_train)} train and {len(x_hold)} holdout rows; both "
            "must be non-empty: ingest more data or change split.holdout_fraction"
        )
    if spec.task != "regression":
        _check_classes(spec, y_train, y_hold)
    from mlops_assets.training.pipeline import build_pipeline, fit_or_explain

    pipeline = build_pipeline(spec, params)
    if spec.task != "classification":  # regression and multiclass: no decision threshold
        fit_or_explain(pipeline, x_train, y_train, spec, params)
        return Trained(pipeline, score(pipeline, x_hold, y_hold, spec), len(x_train), len(x_hold))
    from sklearn.model_selection import FixedThresholdClassifier

    threshold = choose_threshold(spec, params, x_train, y_train)
    # The threshold travels inside the model: predict() answers at it everywhere the model goes
    # (gate, registry pyfunc, server, reproduction).
    model = FixedThresholdClassifier(
        pipeline,
        threshold=threshold,
        # None is scikit-learn's default (the second class, 1 of a 0/1 target): a spec that
        # names no positive class trains the same bytes as before the field existed.
        pos_label=None if spec.positive_class is None else spec.positive_label,
        response_method="predict_proba",
    )
    fit_or_explain(model, x_train, y_train, spec, params)
    return Trained(
        model,
        score(model, x_hold, y_hold, spec),
        len(x_train),
        len(x_hold),
        threshold,
        spec.threshold.rule,
    )


def records(frame: pd.DataFrame, spec: ModelSpec) -> list[dict]:
    """The model's input rows as JSON-ready records (missing values as None): what a client
    sends to the inference server."""
    import pandas as pd

    x = inputs(frame, spec)
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in x.to_dict("records")]


def predictions(pipeline: Pipeline, frame: pd.DataFrame, spec: ModelSpec) -> np.ndarray:
    """What the model answers for ``frame``: P(positive) for a classifier, the value for a
    regressor, the class for a multiclass model."""
    x = inputs(frame, spec)
    if spec.task == "multiclass":
        return pipeline.predict(x)
    if spec.task == "classification":
        return positive_probability(pipeline, x)
    return pipeline.predict(x)
