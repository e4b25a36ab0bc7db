"""Batch inference: score the rows of a ref and prefix of a dataset's repository with a model,
and write the predictions as Parquet to their own versioned repository at a new commit.

The rows never touch the online prediction log (that is what the inference server saw and
answered; monitoring reads it), so a nightly scoring of a whole table never looks like traffic.
Plain library code: no Dagster import.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlops_assets.quality import SOURCE_COLUMN, Violation, read_dataset
from mlops_assets.specs import DatasetSpec, ModelSpec
from mlops_assets.store import VersionedStore

if TYPE_CHECKING:
    import pandas as pd

OUTPUT_PREFIX = "predictions/"


def batch_repository(dataset_repository: str) -> str:
    """Where a dataset's batch predictions are committed (never its prediction log)."""
    return f"{dataset_repository}-batch-predictions"


def scoring_dataset(spec: ModelSpec, prefix: str) -> DatasetSpec:
    """The dataset's rules without the target (rows to score have no outcome yet) and read
    from ``prefix``."""
    columns = {c: cs for c, cs in spec.dataset.columns.items() if c != spec.target}
    return spec.dataset.model_copy(update={"columns": columns, "prefix": prefix, "min_rows": 1})


def rows_to_score(
    store: VersionedStore, spec: ModelSpec, commit: str, prefix: str, day: dt.date | None
) -> tuple[pd.DataFrame, list[Violation], int]:
    """The rows under ``prefix`` at ``commit`` (of ``day`` only, by the spec's event date,
    when given), audited by the dataset's rules; a target column, if present, is ignored."""
    rules = scoring_dataset(spec, prefix)
    data, violations, files = read_dataset(store, rules, commit)
    violations = [
        v
        for v in violations
        if v.rule != "row_count" and not (v.rule == "unexpected_column" and v.column == spec.target)
    ]
    if day is not None and len(data):
        data = data[data[spec.dataset.timestamp].dt.date == day]
    return data.reset_index(drop=True), violations, files


def score(model, frame: pd.DataFrame, spec: ModelSpec, version: str) -> pd.DataFrame:
    """One row per input row: its key and event date, the answer, and for a classifier the
    probability of each class (``probability`` is P(positive) of a binary one)."""
    import numpy as np
    import pandas as pd

    from mlops_assets.training.train import inputs, positive_probability

    x = inputs(frame, spec)
    out = pd.DataFrame(
        {
            spec.dataset.key: frame[spec.dataset.key].astype(str).to_numpy(),
            spec.dataset.timestamp: frame[spec.dataset.timestamp].to_numpy(),
        }
    )
    if len(x) == 0:
        out["prediction"] = pd.Series(dtype="float64")
    else:
        out["prediction"] = np.asarray(model.predict(x))
        if spec.task == "classification":
            out["probability"] = positive_probability(model, x)
        elif spec.task == "multiclass":
            proba = np.asarray(model.predict_proba(x))
            classes = list(getattr(model, "classes_", range(proba.shape[1])))
            for i, label in enumerate(classes):
                out[f"probability_{label}"] = proba[:, i]
    out["model_version"] = str(version)
    return out


def output_path(day: dt.date | None) -> str:
    return f"{OUTPUT_PREFIX}date={day.isoformat() if day else 'all'}/predictions.parquet"


def write_predictions(
    store: VersionedStore, predictions: pd.DataFrame, day: dt.date | None, metadata: dict[str, str]
) -> tuple[str, str]:
    """Commit ``predictions`` as Parquet on main of ``store`` (a rerun of the same day replaces
    its file in a new commit). Returns (commit id, path)."""
    store.ensure_repository()
    path = output_path(day)
    buf = io.BytesIO()
    predictions.to_parquet(buf, index=False)
    store.put("main", path, buf.getvalue())
    if not store.uncommitted("main"):  # the same answers again: nothing new to commit
        return store.head("main"), path
    commit = store.commit("main", f"Batch predictions {path}", metadata)
    return commit.id, path


def source_files(frame: pd.DataFrame) -> list[str]:
    return sorted(set(frame[SOURCE_COLUMN])) if SOURCE_COLUMN in frame and len(frame) else []


class BatchInputError(ValueError):
    """The rows to score break the dataset's rules; nothing was scored."""


@dataclass(frozen=True)
class BatchRun:
    data_commit: str
    files: int
    source_files: list[str]
    rows: int
    predictions_commit: str
    path: str


def score_and_commit(
    source: VersionedStore,
    out: VersionedStore,
    model,
    spec: ModelSpec,
    version: str,
    ref: str,
    prefix: str,
    day: dt.date | None,
    extra: dict[str, str] | None = None,
) -> BatchRun:
    """Resolve ``ref`` to its commit, score the rows under ``prefix`` (of ``day``, if given)
    with ``model`` (version ``version``) and commit the answers to ``out``."""
    commit = source.get_commit(ref).id  # the exact data scored, whatever the ref does next
    frame, violations, files = rows_to_score(source, spec, commit, prefix, day)
    if violations:
        listed = "; ".join(str(v) for v in violations[:5])
        raise BatchInputError(
            f"rows under {prefix!r} at {commit[:12]} break the dataset's rules, nothing was "
            f"scored: {listed}"
        )
    answers = score(model, frame, spec, version)
    tags = {
        "model": spec.model_name,
        "model_version": version,
        "data_repository": source.repository,
        "data_commit": commit,
        "data_ref": ref,
        "data_prefix": prefix,
        "rows": str(len(answers)),
        **(extra or {}),
    }
    out_commit, path = write_predictions(out, answers, day, tags)
    return BatchRun(commit, files, source_files(frame), len(answers), out_commit, path)
