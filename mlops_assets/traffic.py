"""Simulated production traffic, and the ground truth that arrives later.

``send_traffic`` sends rows from the data simulator (optionally from a drifted world) to the
inference server, as a client would, and keeps what the simulator knows and the server does
not: the true outcome of each served row. ``commit_labels`` delivers those outcomes later, the
way labels arrive in production (a churn is known a month after the prediction), into the
predictions repository under ``labels/<model>/<day>/``, keyed by the server's request id and
the row's position in the request. ``production_performance`` joins them to the prediction log.

Plain library code: no Dagster import.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import httpx
import orjson

from mlops_assets.serving.predlog import predictions_repository
from mlops_assets.simulator import simulate_batch
from mlops_assets.specs import ModelSpec
from mlops_assets.store import NothingToCommit, VersionedStore
from mlops_assets.training.train import records

LABELS = "labels/"


@dataclass
class TrafficResult:
    requests: int = 0
    rows: int = 0
    errors: list[str] = field(default_factory=list)
    labels: list[dict] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)


def send_traffic(
    url: str,
    spec: ModelSpec,
    day: dt.date,
    rows: int = 500,
    batch: int = 10,
    drift: str = "none",
    seed: int = 1,
    timeout: float = 30.0,
) -> TrafficResult:
    """POST ``rows`` simulated rows of ``day`` to ``url``/predict, ``batch`` rows a request.

    Returns what was answered (per model version) and the delayed labels to commit later.
    """
    if not spec.simulator:
        raise ValueError(f"spec {spec.name!r} has no simulator: traffic needs one")
    if batch < 1 or rows < 1:
        raise ValueError(f"rows ({rows}) and batch ({batch}) must be at least 1")
    frame = simulate_batch(spec.simulator, day, rows=rows, seed=seed, drift=drift)
    bodies = records(frame, spec)
    truth = frame[spec.target].tolist()
    out = TrafficResult()
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout) as client:
        for start in range(0, len(bodies), batch):
            chunk = bodies[start : start + batch]
            try:
                r = client.post("/predict", json={"model": spec.name, "records": chunk})
            except httpx.HTTPError as e:
                out.errors.append(f"{type(e).__name__}: {e}")
                continue
            out.requests += 1
            if r.status_code != 200:
                out.errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                continue
            answer = r.json()
            version = str(answer["model_version"])
            out.versions[version] = out.versions.get(version, 0) + len(chunk)
            out.rows += len(chunk)
            for i in range(len(chunk)):
                out.labels.append(
                    {
                        "request_id": answer["request_id"],
                        "row": i,
                        "label": truth[start + i],
                    }
                )
    return out


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
