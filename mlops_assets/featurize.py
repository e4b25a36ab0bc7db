"""Feature table, train/holdout split and reference profile. Plain library code, no Dagster.

Deterministic: the same dataset gives byte-identical features. The split hashes each row's
key with the spec's seed, so a row never moves between train and holdout as data grows, and
the holdout of one model version is comparable with the next one's.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from mlops_assets.specs import ModelSpec

if TYPE_CHECKING:
    import pandas as pd

SPLIT = "split"
# Bump when the feature logic changes: it is part of the features' and the training code version.
REVISION = "features-1"


def _holdout(keys: pd.Series, fraction: float, seed: int) -> pd.Series:
    def bucket(key: str) -> float:
        digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    return keys.astype(str).map(bucket) < fraction


def is_holdout(keys: pd.Series, spec: ModelSpec) -> pd.Series:
    """Which rows (by key) the spec's split puts in the holdout."""
    return _holdout(keys, spec.split.holdout_fraction, spec.split.seed)


def build_features(dataset: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """Key, timestamp, feature columns (typed), target and a ``split`` column, sorted by key."""
    import numpy as np

    ds = spec.dataset
    cols = [ds.key, ds.timestamp, *spec.features, spec.target]
    missing = [c for c in cols if c not in dataset.columns]
    if missing:
        raise ValueError(
            f"model {spec.name!r}: dataset lacks columns {missing}: fix the spec's features "
            "or the data"
        )
    out = dataset[cols].copy()  # keeps dataset.attrs: the lakeFS commit travels with the data
    for col in spec.numeric_features:
        out[col] = out[col].astype("float64")
    for col in spec.categorical_features:
        out[col] = out[col].astype("string")
    if spec.task == "regression":
        out[spec.target] = out[spec.target].astype("float64")
    elif ds.columns[spec.target].dtype == "int" or (
        spec.task == "classification" and spec.positive_class is None  # a 0/1 target
    ):
        out[spec.target] = out[spec.target].astype("int64")
    else:
        # class labels as the spec types them: integers, or text (object, as JSON gives them)
        out[spec.target] = out[spec.target].astype(str).astype(object)
    out = out.sort_values(ds.key, kind="mergesort").reset_index(drop=True)
    holdout = is_holdout(out[ds.key], spec)
    out[SPLIT] = np.where(holdout, "holdout", "train")
    return out


def reference_profile(features: pd.DataFrame, spec: ModelSpec) -> dict:
    """Per-column statistics of the training split: what "normal" looks like for drift checks."""
    train = features[features[SPLIT] == "train"]
    profile: dict = {"model": spec.name, "rows": len(train), "columns": {}}
    for col in spec.numeric_features:
        s = train[col]
        q = s.quantile([0.05, 0.25, 0.5, 0.75, 0.95])
        profile["columns"][col] = {
            "kind": "numeric",
            "null_fraction": round(float(s.isna().mean()), 6),
            "mean": round(float(s.mean()), 6),
            "std": round(float(s.std()), 6),
            "min": float(s.min()),
            "max": float(s.max()),
            "quantiles": {str(k): round(float(v), 6) for k, v in q.items()},
        }
    for col in [*spec.categorical_features, spec.target]:
        s = train[col].astype("string")
        if col == spec.target and spec.task == "regression":
            t = train[col]
            profile["columns"][col] = {
                "kind": "target",
                "mean": round(float(t.mean()), 6),
                "std": round(float(t.std()), 6),
            }
            continue
        freq = s.value_counts(normalize=True, dropna=False).sort_index()
        profile["columns"][col] = {
            "kind": "target" if col == spec.target else "categorical",
            "null_fraction": round(float(s.isna().mean()), 6),
            "frequencies": {str(k): round(float(v), 6) for k, v in freq.items()},
        }
    return profile
