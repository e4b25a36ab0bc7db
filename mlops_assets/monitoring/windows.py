"""What the serving version answered, read back from the committed prediction log: the
window drift is computed on, and the window live performance scores (joined to the labels).
Only real traffic: rows logged as synthetic (holdout replay, smoke tests, benchmarks, sent
with the ``X-Mlops-Synthetic`` header) never enter a window.

The log is read as the upkeep leaves it (see ``monitoring/upkeep.py``): the compacted Parquet
day files plus the raw segments not compacted yet, each row once, in the same order as the raw
log, so a window is the same before and after compaction and retention.

Plain library code: no Dagster import.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from mlops_assets.monitoring.drift import PREDICTION, PROBABILITY
from mlops_assets.monitoring.labels import read_labels
from mlops_assets.monitoring.upkeep import logged_rows
from mlops_assets.specs import ModelSpec
from mlops_assets.store import NotFound, VersionedStore

if TYPE_CHECKING:
    import pandas as pd


def served_rows(
    store: VersionedStore, spec: ModelSpec, version: str, ref: str | None = None
) -> Iterator[dict]:
    """Rows the serving version answered to real clients, newest first, from the committed log
    at ``ref`` (default: main's head; nothing if the log has no commit yet): compacted day
    files and raw segments alike."""
    if ref is None:
        try:
            ref = store.get_commit("main").id
        except NotFound:
            return
    for r in logged_rows(store, spec.name, ref):
        if r["model_version"] == version and not r.get("synthetic"):
            yield r


def current_window(store: VersionedStore, spec: ModelSpec, version: str, rows: int) -> pd.DataFrame:
    """The newest ``rows`` rows the serving version answered: inputs, its answer (probability
    for a classifier; the class, with ``probability_<class>`` columns, for a multiclass model)
    as ``prediction``, and the time, oldest first."""
    import pandas as pd

    out: list[dict] = []
    for r in served_rows(store, spec, version):
        value = r.get("probability", r.get("prediction"))
        if isinstance(value, dict):  # multiclass: the class, and P(class) for each class
            answer = {PREDICTION: r["prediction"]}
            answer.update({f"{PROBABILITY}{c}": p for c, p in value.items()})
        else:
            answer = {PREDICTION: value}
        out.append({**r["inputs"], **answer, "timestamp": r["timestamp"]})
        if len(out) >= rows:
            break
    return pd.DataFrame(out[::-1])


def labelled_window(
    store: VersionedStore, spec: ModelSpec, version: str, rows: int
) -> pd.DataFrame:
    """The newest ``rows`` served rows of ``version`` whose label has arrived, with it."""
    import pandas as pd

    try:
        ref = store.get_commit("main").id
    except NotFound:
        return pd.DataFrame()
    labels = read_labels(store, ref, spec)
    out: list[dict] = []
    for r in served_rows(store, spec, version, ref):
        label = labels.get((str(r["request_id"]), int(r["row"])))
        if label is None:
            continue
        out.append(
            {
                "label": label,
                "prediction": r.get("prediction"),
                "probability": r.get("probability"),
                "timestamp": r["timestamp"],
            }
        )
        if len(out) >= rows:
            break
    return pd.DataFrame(out[::-1])
