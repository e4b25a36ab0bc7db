"""Live performance: what the serving model answered, joined to the labels that arrived later,
scored with the metric the promotion gate used, and compared with the model's evaluation.

Plain library code: no Dagster import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from mlops_assets.specs import ModelSpec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import ArrayLike


class PerformanceInputError(ValueError):
    """The labelled window cannot be scored; the message says why."""


@dataclass(frozen=True)
class LivePerformance:
    metric: str
    live: float
    expected: float
    tolerance: float
    higher_is_better: bool
    rows: int
    se: float = 0.0  # bootstrap standard error of ``live``

    @property
    def _edge(self) -> float:
        """The band's edge on the bad side."""
        sign = -1 if self.higher_is_better else 1
        return self.expected + sign * self.tolerance * abs(self.expected)

    @property
    def significant(self) -> bool:
        """Past the bad edge by more than twice the window's sampling error."""
        gap = self._edge - self.live if self.higher_is_better else self.live - self._edge
        return gap > 2 * self.se

    @property
    def relative_change(self) -> float:
        """(live - expected) / |expected|: negative is worse for a score, better for an error."""
        return (self.live - self.expected) / abs(self.expected) if self.expected else math.inf

    @property
    def below_band(self) -> bool:
        """Outside the band on the bad side, significant or not."""
        change = self.relative_change
        return change < -self.tolerance if self.higher_is_better else change > self.tolerance

    @property
    def worse(self) -> bool:
        """Outside the band on the bad side, by more than the window's sampling error."""
        return self.below_band and self.significant

    @property
    def better(self) -> bool:
        """Outside the band on the good side (suspicious: labels or evaluation may be off)."""
        change = self.relative_change
        return change > self.tolerance if self.higher_is_better else change < -self.tolerance

    def describe(self) -> str:
        if self.worse:
            where = "worse than the"
        elif self.below_band:
            where = "below, but within twice the sampling error of, the"
        else:
            where = "better than the" if self.better else "within the"
        return (
            f"live {self.metric}={self.live:.4f} (±{self.se:.4f}) on {self.rows} labelled "
            f"row(s) vs evaluated {self.expected:.4f} ({self.relative_change:+.1%}): {where} "
            f"±{self.tolerance:.0%} band"
        )


def _class_name(value: object) -> str:
    """A class label as the server names it (``str`` of the model's class): ``1.0`` from a
    JSON number is class ``1``."""
    import numpy as np

    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        return _class_name(value.item())
    return str(value)


Multiclass: TypeAlias = "tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str]]"


def multiclass_arrays(
    spec: ModelSpec,
    y_true: ArrayLike,
    prediction: ArrayLike,
    probability: ArrayLike | None,
    classes: list | None = None,
) -> Multiclass:
    """Labels and answers as class names, P(class) as a matrix whose columns are ``classes``.

    ``probability`` is what the server logged (one ``{class: P(class)}`` object per row; the
    classes are its keys) or a matrix whose columns are ``classes``. A label that is not one of
    the model's classes is an error naming it: the model never saw it, so no score is honest.
    """
    import numpy as np

    y = np.asarray(
        [_class_name(v) for v in np.asarray(y_true, dtype=object).tolist()], dtype=object
    )
    pred = np.asarray(
        [_class_name(v) for v in np.asarray(prediction, dtype=object).tolist()], dtype=object
    )
    if len(y) == 0:
        raise PerformanceInputError("no labelled predictions to score")
    rows: list | None = None if probability is None else list(probability)  # type: ignore[arg-type]
    matrix = None
    if rows and isinstance(rows[0], dict):
        names = [str(c) for c in rows[0]]
        matrix = np.asarray([[float(r[c]) for c in names] for r in rows], dtype="float64")
    elif classes is not None:
        names = [_class_name(c) for c in classes]
        if rows is not None:
            matrix = np.asarray(rows, dtype="float64")
    else:
        names = sorted({*y.tolist(), *pred.tolist()})
    known = set(names)
    unknown = sorted({v for v in y.tolist() if v not in known})
    if unknown:
        row = int(np.flatnonzero(y == unknown[0])[0])
        allowed = spec.dataset.columns[spec.target].allowed
        listed = f" (the spec allows {list(allowed)})" if allowed is not None else ""
        raise PerformanceInputError(
            f"model {spec.name!r}: label(s) {unknown} for target {spec.target!r} (first at row "
            f"{row} of the labelled window) are not classes the model knows: {names}{listed}. "
            "The model never saw that class, so it cannot be scored on it: fix the labels the "
            "labelling system delivers, or ingest data with that class and retrain"
        )
    return y, pred, matrix, names


def multiclass_score(metric: str, y: np.ndarray, pred: np.ndarray, matrix, names: list) -> float:
    """``metric`` (accuracy, f1_macro, roc_auc_ovr, log_loss) on prepared multiclass arrays."""
    from sklearn import metrics as skm

    if metric == "accuracy":
        return float(skm.accuracy_score(y, pred))
    if metric == "f1_macro":
        return float(skm.f1_score(y, pred, labels=names, average="macro", zero_division=0))
    if metric not in ("roc_auc_ovr", "log_loss"):
        raise PerformanceInputError(f"metric {metric!r} cannot be scored live")
    if matrix is None:
        raise PerformanceInputError(f"{metric} needs probabilities; the log has none")
    if metric == "log_loss":
        return float(skm.log_loss(y, matrix, labels=names))
    missing = sorted(set(names) - set(y.tolist()))
    if missing:
        raise PerformanceInputError(
            f"roc_auc_ovr needs every class among the labels; none are {missing} in these "
            f"{len(y)} rows"
        )
    return float(skm.roc_auc_score(y, matrix, multi_class="ovr", average="macro", labels=names))


def live_score(
    spec: ModelSpec,
    y_true: ArrayLike,
    prediction: ArrayLike,
    probability: ArrayLike | None,
    classes: list | None = None,
) -> float:
    """The gate's metric (``spec.evaluation.metric``) on what was served and what came true.
    A binary classifier's ``probability`` is P(positive); a multiclass model's is one
    ``{class: P}`` object per row, or a matrix whose columns are ``classes``."""
    if spec.task == "multiclass":
        arrays = multiclass_arrays(spec, y_true, prediction, probability, classes)
        return multiclass_score(spec.evaluation.metric, *arrays)
    y, pred = _numeric_arrays(spec, y_true, prediction)
    return _score(spec.evaluation.metric, y, pred, probability)


def _is_positive(spec: ModelSpec, values: ArrayLike, what: str) -> np.ndarray:
    """1.0 where a binary classifier's label (or answer) is its positive class, 0.0 where it is
    the other, NaN where it is missing; any other label is an error naming it."""
    import numpy as np

    positive, negative = _class_name(spec.positive_label), _class_name(spec.negative_label)
    out = np.empty(len(values), dtype="float64")  # type: ignore[arg-type]
    for i, v in enumerate(np.asarray(values, dtype=object).tolist()):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out[i] = np.nan
            continue
        name = _class_name(v)
        if name not in (positive, negative):
            raise PerformanceInputError(
                f"model {spec.name!r}: {what} {v!r} for target {spec.target!r} (row {i} of the "
                f"labelled window) is neither the positive class {positive!r} nor the other "
                f"class {negative!r}: fix the labels the labelling system delivers"
            )
        out[i] = 1.0 if name == positive else 0.0
    return out


def _numeric_arrays(
    spec: ModelSpec, y_true: ArrayLike, prediction: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and answers as numbers: a regressor's values, or a binary classifier's classes
    as 1 (positive) and 0, whatever its labels are (0/1, yes/no, malignant/benign)."""
    import numpy as np

    if spec.task == "classification":
        y, pred = _is_positive(spec, y_true, "label"), _is_positive(spec, prediction, "answer")
    else:
        y, pred = np.asarray(y_true, dtype="float64"), np.asarray(prediction, dtype="float64")
    if len(y) == 0:
        raise PerformanceInputError("no labelled predictions to score")
    if np.isnan(y).any() or np.isnan(pred).any():
        raise PerformanceInputError(
            f"{int(np.isnan(y).sum())} label(s) and {int(np.isnan(pred).sum())} prediction(s) "
            "are missing: the labels or the log are malformed"
        )
    return y, pred


def _score(metric: str, y: np.ndarray, pred: np.ndarray, probability: ArrayLike | None) -> float:
    """``metric`` on numeric labels and answers (a classifier's: 1 is the positive class)."""
    import numpy as np
    from sklearn import metrics as skm

    if metric == "roc_auc":
        if probability is None:
            raise PerformanceInputError("roc_auc needs probabilities; the log has none")
        if len(np.unique(y)) < 2:
            raise PerformanceInputError(
                f"roc_auc needs both classes among the labels; all {len(y)} are "
                f"{'the positive class' if y[0] else 'the other class'}"
            )
        return float(skm.roc_auc_score(y, np.asarray(probability, dtype="float64")))
    scorers = {
        "accuracy": skm.accuracy_score,
        "f1": lambda a, b: skm.f1_score(a, b, zero_division=0),
        "rmse": lambda a, b: math.sqrt(skm.mean_squared_error(a, b)),
        "mae": skm.mean_absolute_error,
        "r2": skm.r2_score,
    }
    if metric not in scorers:
        raise PerformanceInputError(f"metric {metric!r} cannot be scored live")
    return float(scorers[metric](y, pred))


def bootstrap_se(
    spec: ModelSpec,
    y_true: ArrayLike,
    prediction: ArrayLike,
    probability: ArrayLike | None,
    resamples: int = 200,
    seed: int = 0,
    classes: list | None = None,
) -> float:
    """Standard error of the live score from ``resamples`` bootstrap resamples of the window."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if spec.task == "multiclass":
        y, pred, matrix, names = multiclass_arrays(spec, y_true, prediction, probability, classes)
        found = []
        for _ in range(resamples):
            i = rng.integers(0, len(y), len(y))
            m = None if matrix is None else matrix[i]
            try:
                found.append(multiclass_score(spec.evaluation.metric, y[i], pred[i], m, names))
            except PerformanceInputError:  # a resample that lacks a class: skip it
                continue
        return float(np.std(found, ddof=1)) if len(found) > 1 else 0.0
    y, pred = _numeric_arrays(spec, y_true, prediction)
    prob = None if probability is None else np.asarray(probability, dtype="float64")
    scores = []
    for _ in range(resamples):
        i = rng.integers(0, len(y), len(y))
        try:
            p = None if prob is None else prob[i]
            scores.append(_score(spec.evaluation.metric, y[i], pred[i], p))
        except PerformanceInputError:  # a resample with one class: skip it
            continue
    return float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0


def compare(
    spec: ModelSpec, live: float, expected: float, rows: int, tolerance: float, se: float = 0.0
) -> LivePerformance:
    return LivePerformance(
        spec.evaluation.metric,
        live,
        expected,
        tolerance,
        spec.evaluation.higher_is_better,
        rows,
        se,
    )


def assess_window(
    spec: ModelSpec,
    window: pd.DataFrame,
    evaluated: float | None,
    version: str,
    min_rows: int,
    tolerance: float,
) -> LivePerformance:
    """The serving version's live score on a labelled window (``label``, ``prediction``,
    ``probability``), against the score it was gated on. Raises PerformanceInputError, saying
    why, when the window cannot be judged (never gated, too few labels, unscorable)."""
    metric = spec.evaluation.metric
    if evaluated is None:
        raise PerformanceInputError(
            f"version {version} has no gate.{metric} tag: it was never gated"
        )
    if len(window) < min_rows:
        raise PerformanceInputError(
            f"{len(window)} labelled row(s) for version {version}, fewer than "
            f"min_rows={min_rows}; labels arrive later than predictions"
        )
    probability = window["probability"] if window["probability"].notna().all() else None
    live = live_score(spec, window["label"], window["prediction"], probability)
    se = bootstrap_se(spec, window["label"], window["prediction"], probability)
    return compare(spec, live, float(evaluated), len(window), tolerance, se)
