"""Data and prediction drift with Evidently 0.7, decided by Evidently's own tests.

One ``Report(..., include_tests=True)``:
- ``DataDriftPreset(columns=<the spec's features>)``: a ``ValueDrift`` per feature, each with
  a PASS/FAIL test (drifted = FAIL), and ``DriftedColumnsCount`` with its drifted-share test.
  The dataset's drifted share is Evidently's, over the features only.
- one ``ValueDrift`` per column of the model's answer (``prediction``; a multiclass model's
  ``probability_<class>`` too), each with its own test: reported on its own, never counted in
  the dataset share (a model that answers differently is a symptom, not one more feature).

Everything is read from the snapshot's test results (``Snapshot.tests_results``) and the
metric result each test names, never parsed out of metric names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlops_assets.specs import ModelSpec
from mlops_assets.store import VersionedStore

if TYPE_CHECKING:
    import pandas as pd

PREDICTION = "prediction"
# A multiclass model's answer is a class (``prediction``, categorical) and P(class) for each
# class: one numeric column ``probability_<class>`` each, compared on their own.
PROBABILITY = "probability_"


def is_output(column: str) -> bool:
    """A column of the model's answer (not a feature) in a drift frame."""
    return column == PREDICTION or str(column).startswith(PROBABILITY)


def output_columns(frame: pd.DataFrame, spec: ModelSpec) -> list[str]:
    return [c for c in frame.columns if is_output(c) and c not in spec.features]


class DriftInputError(ValueError):
    """The window cannot be compared (empty, wrong schema); the message says why."""


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DatasetDrift:
    """Evidently's ``DriftedColumnsCount`` over the features and its drifted-share test."""

    count: int
    share: float
    threshold: float  # the test fails at a share at or above it
    drifted: bool


@dataclass
class DriftResult:
    columns: list[ColumnDrift]
    reference_rows: int
    current_rows: int
    html: str = field(repr=False, default="")
    dataset: DatasetDrift | None = None  # None only for a result built by hand

    @property
    def features(self) -> list[ColumnDrift]:
        return [c for c in self.columns if not is_output(c.column)]

    @property
    def prediction(self) -> ColumnDrift | None:
        return next((c for c in self.columns if c.column == PREDICTION), None)

    @property
    def probabilities(self) -> list[ColumnDrift]:
        """A multiclass model's P(class) columns (empty for other models)."""
        return [c for c in self.columns if c.column.startswith(PROBABILITY)]

    @property
    def drifted_count(self) -> int:
        if self.dataset is not None:
            return self.dataset.count
        return sum(c.drifted for c in self.features)

    @property
    def drift_share(self) -> float:
        """The share of drifted features (Evidently's; outputs are never counted)."""
        if self.dataset is not None:
            return self.dataset.share
        return self.drifted_count / len(self.features) if self.features else 0.0

    def table(self) -> str:
        rows = ["| column | method | score | threshold | drifted |", "|---|---|---:|---:|---|"]
        for c in self.columns:
            rows.append(
                f"| {c.column} | {c.method} | {c.score:.4g} | {c.threshold:g} | "
                f"{'**yes**' if c.drifted else 'no'} |"
            )
        return "\n".join(rows)


def is_drifted(method: str, score: float, threshold: float) -> bool:
    """The rule Evidently's ``ValueDriftTest`` applies to a column's score: a p-value below the
    threshold, or a distance at or above it. ``compute_drift`` takes the test's own verdict;
    this reads a stored score (a report's table, a metric) that comes without one."""
    return score < threshold if "p_value" in method else score >= threshold


def prepare(frame: pd.DataFrame, spec: ModelSpec, what: str) -> pd.DataFrame:
    """The spec's features (and the prediction, if present) with training dtypes."""
    import pandas as pd

    missing = [c for c in spec.features if c not in frame.columns]
    if missing:
        raise DriftInputError(
            f"{what} lacks feature columns {missing}: the log's schema does not match model "
            f"{spec.name!r}"
        )
    outputs = output_columns(frame, spec)
    out = frame[[*spec.features, *outputs]].copy()
    classes = [PREDICTION] if spec.task == "multiclass" and PREDICTION in out else []
    for c in [*spec.numeric_features, *(o for o in outputs if o not in classes)]:
        out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
    for c in classes:  # the predicted class is a category, whatever its labels look like
        out[c] = out[c].astype("string").fillna("missing").astype(object)
    for c in spec.categorical_features:
        out[c] = out[c].astype("string").fillna("missing").astype(object)
    return out


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    spec: ModelSpec,
    html: bool = True,
    drift_share: float = 0.5,
) -> DriftResult:
    """Per-column drift of ``current`` against ``reference``: the features (and their drifted
    share, whose test fails at ``drift_share``) and, on their own, the model's answers."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    if len(current) == 0:
        raise DriftInputError("the current window is empty: no predictions were logged")
    if len(reference) == 0:
        raise DriftInputError("the reference is empty: the model's training split has no rows")
    ref = prepare(reference, spec, "the reference")
    cur = prepare(current, spec, "the current window")
    unmatched = set(output_columns(ref, spec)) ^ set(output_columns(cur, spec))
    if unmatched:  # an answer only one side has cannot be compared
        ref, cur = (
            ref.drop(columns=list(unmatched & set(ref.columns))),
            cur.drop(columns=list(unmatched & set(cur.columns))),
        )
    all_nan = [c for c in cur.columns if cur[c].isna().all()]
    if all_nan:
        raise DriftInputError(f"the current window has only missing values in {all_nan}")
    categorical = [*spec.categorical_features]
    if spec.task == "multiclass" and PREDICTION in cur:
        categorical.append(PREDICTION)
    numeric = [c for c in cur.columns if c not in categorical]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    outputs = output_columns(cur, spec)
    report = Report(
        [
            DataDriftPreset(columns=list(spec.features), drift_share=drift_share),
            *(ValueDrift(column=c) for c in outputs),
        ],
        include_tests=True,
    )
    snapshot = report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    columns, dataset = _read_tests(snapshot)
    expected = [*spec.features, *outputs]
    untested = [c for c in expected if c not in {d.column for d in columns}]
    if untested or dataset is None:
        raise DriftInputError(
            f"Evidently gave no drift test for {untested or ['the drifted share']} of model "
            f"{spec.name!r}: check that the evidently version is the one setup.py pins"
        )
    order = {c: i for i, c in enumerate(expected)}
    columns.sort(key=lambda c: order.get(c.column, len(order)))
    return DriftResult(
        columns, len(ref), len(cur), snapshot.get_html_str(False) if html else "", dataset
    )


def _read_tests(snapshot) -> tuple[list[ColumnDrift], DatasetDrift | None]:
    """Each ``ValueDrift`` test (its column, method, threshold, the metric's score and the
    test's verdict) and the ``DriftedColumnsCount`` test, from the snapshot's test results."""
    columns: list[ColumnDrift] = []
    dataset = None
    for test in snapshot.tests_results:
        params = test.metric_config.params
        kind = str(params.get("type", "")).rsplit(":", 1)[-1]
        result = snapshot.metric_results[test.metric_config.metric_id]
        status = str(getattr(test.status, "value", test.status))
        if status not in ("SUCCESS", "FAIL"):  # ERROR, SKIPPED: no verdict to act on
            raise DriftInputError(
                f"Evidently could not decide {test.name!r} ({status}): {test.description}"
            )
        if kind == "ValueDrift":
            columns.append(
                ColumnDrift(
                    params["column"],
                    params["method"],
                    float(result.value),
                    float(params["threshold"]),
                    status == "FAIL",
                )
            )
        elif kind == "DriftedColumnsCount":
            dataset = DatasetDrift(
                int(result.count.value),
                float(result.share.value),
                float(params["drift_share"]),
                status == "FAIL",
            )
    return columns, dataset


def reference_frame(store: VersionedStore, spec: ModelSpec, commit: str, model) -> pd.DataFrame:
    """What "normal" is for a serving version: the training split of exactly the data it
    learned (the dataset at ``commit``), with the version's own answers as ``prediction``."""
    from mlops_assets.featurize import SPLIT, build_features
    from mlops_assets.quality import read_dataset
    from mlops_assets.training.train import inputs, predictions

    dataset, _, _ = read_dataset(store, spec.dataset, commit)
    features = build_features(dataset, spec)
    train = features[features[SPLIT] == "train"]
    reference = inputs(train, spec)
    reference[PREDICTION] = predictions(model, train, spec)
    if spec.task == "multiclass":
        from mlops_assets.training.train import classes

        proba = model.predict_proba(reference[list(spec.features)])
        for i, c in enumerate(classes(model)):
            reference[f"{PROBABILITY}{c}"] = proba[:, i]
    return reference


@dataclass(frozen=True)
class Verdict:
    """How a drift result is judged: passed below ``warn_share``; ERROR (which retrains) at or
    above ``error_share``, WARN in between."""

    passed: bool
    error: bool
    description: str
    drifted: list[str]


def judge(result: DriftResult, warn_share: float, error_share: float) -> Verdict:
    share = result.drift_share
    drifted = [c.column for c in result.features if c.drifted]
    description = (
        f"{result.drifted_count} of {len(result.features)} features drifted "
        f"(share {share:.0%}; warn at {warn_share:.0%}, error at {error_share:.0%})"
        f"{': ' + ', '.join(drifted) if drifted else ''}"
    )
    return Verdict(share < warn_share, share >= error_share, description, drifted)
