"""The labels contract: how ground truth reaches the platform, late, beside the predictions.

Labels arrive the way they do in production (a churn is known a month after the prediction):
JSON lines ``{"request_id": ..., "row": ..., "label": ...}`` committed into the predictions
repository under ``labels/<model>/<day>/``, keyed by the inference server's request id and the
row's position in that request. ``production_performance`` joins them to the prediction log.
Any labelling system can deliver them: ``commit_labels`` is the reference writer.

Plain library code: no Dagster import.
"""

from __future__ import annotations

import datetime as dt

import orjson

from mlops_assets.serving.predlog import predictions_repository
from mlops_assets.specs import ModelSpec
from mlops_assets.store import NothingToCommit, VersionedStore

LABELS = "labels/"


def commit_labels(store: VersionedStore, spec: ModelSpec, labels: list[dict]) -> str | None:
    """Deliver ground-truth labels into the predictions repository; the new commit id."""
    if not labels:
        return None
    now = dt.datetime.now(dt.UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S%f")
    lines = b"".join(orjson.dumps({**x, "labelled_at": now.timestamp()}) + b"\n" for x in labels)
    path = f"{LABELS}{spec.name}/{now:%Y%m%d}/labels-{stamp}.jsonl"
    store.ensure_repository()
    store.put("main", path, lines)
    try:
        return store.commit(
            "main", f"labels: {len(labels)} row(s) of {spec.name}", {"rows": str(len(labels))}
        ).id
    except NothingToCommit:
        # Uncommitted changes on a branch are shared (as in lakeFS): the prediction log's
        # committer took our file into its own commit between our put and our commit.
        head = store.head("main")
        if store.get(head, path) != lines:
            raise
        return head


def read_labels(store: VersionedStore, ref: str, spec: ModelSpec) -> dict[tuple[str, int], float]:
    """Every delivered label of ``spec`` at ``ref``: (request id, row) -> true outcome."""
    out: dict[tuple[str, int], float] = {}
    for path in store.list(ref, f"{LABELS}{spec.name}/"):
        for line in store.get(ref, path).splitlines():
            if line.strip():
                x = orjson.loads(line)
                out[(str(x["request_id"]), int(x["row"]))] = x["label"]
    return out


def labels_repository(spec: ModelSpec) -> str:
    """Labels live beside the prediction log they answer."""
    return predictions_repository(spec.dataset.repository)
