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
    """Deliver ground-truth labels into the predictions repository; the new commit id.
    A classifier's label outside the classes its spec allows is refused, naming it (nothing is
    committed): live performance could not score a class the model never saw."""
    if not labels:
        return None
    check_classes(spec, labels)
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


def check_classes(spec: ModelSpec, labels: list[dict]) -> None:
    """Every label of a classifier is one of the target column's allowed values, if the spec
    lists them (compared as text: a JSON ``1`` or ``1.0`` is class ``1``)."""
    allowed = spec.dataset.columns[spec.target].allowed
    if spec.task == "regression" or allowed is None:
        return

    def name(v: object) -> str:
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)

    known = {name(a) for a in allowed}
    for x in labels:
        if name(x.get("label")) not in known:
            raise ValueError(
                f"labels of {spec.name!r}: label {x.get('label')!r} (request "
                f"{x.get('request_id')!r}, row {x.get('row')!r}) is not one of the classes the "
                f"spec allows for target {spec.target!r}: {list(allowed)}. The model never saw "
                "it: fix the label, or add the class to the spec and retrain; nothing was "
                "committed"
            )


def read_labels(store: VersionedStore, ref: str, spec: ModelSpec) -> dict[tuple[str, int], object]:
    """Every delivered label of ``spec`` at ``ref``: (request id, row) -> true outcome."""
    out: dict[tuple[str, int], object] = {}
    for path in store.list(ref, f"{LABELS}{spec.name}/"):
        for line in store.get(ref, path).splitlines():
            if line.strip():
                x = orjson.loads(line)
                out[(str(x["request_id"]), int(x["row"]))] = x["label"]
    return out


def labels_repository(spec: ModelSpec) -> str:
    """Labels live beside the prediction log they answer."""
    return predictions_repository(spec.dataset.repository)
