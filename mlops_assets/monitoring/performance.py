"""Live performance: what the serving model answered, joined to the labels that arrived later,
scored with the metric the promotion gate used, and compared with the model's evaluation.

Plain library code: no Dagster import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from mlops_assets.specs import ModelSpec


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


def live_score(
    spec: ModelSpec,
    y_true: ArrayLike,
    prediction: ArrayLike,
    probability: ArrayLike | None,
) -> float:
    """The gate's metric (``spec.evaluation.metric``) on what was served and what came true."""
    from sklearn import metrics as skm

    metric = spec.evaluation.metric
    y = np.asarray(y_true, dtype="float64")
    pred = np.asarray(prediction, dtype="float64")
    if len(y) == 0:
        raise PerformanceInputError("no labelled predictions to score")
    if np.isnan(y).any() or np.isnan(pred).any():
        raise PerformanceInputError(
            f"{int(np.isnan(y).sum())} label(s) and {int(np.isnan(pred).sum())} prediction(s) "
            "are missing: the labels or the log are malformed"
        )
    if metric == "roc_auc":
        if probability is None:
            raise PerformanceInputError("roc_auc needs probabilities; the log has none")
        if len(np.unique(y)) < 2:
            raise PerformanceInputError(
                f"roc_auc needs both classes among the labels; all {len(y)} are {y[0]:g}"
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
) -> float:
    """Standard error of the live score from ``resamples`` bootstrap resamples of the window."""
    rng = np.random.default_rng(seed)
    y, pred = np.asarray(y_true, dtype="float64"), np.asarray(prediction, dtype="float64")
    prob = None if probability is None else np.asarray(probability, dtype="float64")
    scores = []
    for _ in range(resamples):
        i = rng.integers(0, len(y), len(y))
        try:
            scores.append(live_score(spec, y[i], pred[i], None if prob is None else prob[i]))
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
