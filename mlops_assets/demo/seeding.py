"""Seed a spec's repository with demo data through write-audit-publish. Plain library code."""

from __future__ import annotations

import datetime as dt
import re

from mlops_assets.demo.simulator import simulate_batch, to_csv_bytes
from mlops_assets.ingest import IngestResult, ingest_batch
from mlops_assets.specs import ModelSpec
from mlops_assets.store import VersionedStore

DAY = re.compile(r"day-(\d{4}-\d{2}-\d{2})")
# What `mlops seed` (and so scripts/run.sh) seeds by default: the size a newcomer's first model
# is trained on. test_demo_signal.py checks the demo clears its gate at it on every day.
DEMO_DAYS = 14
DEMO_ROWS = 400


def batch_days(store: VersionedStore, spec: ModelSpec) -> list[dt.date]:
    """The simulated days already on main, sorted."""
    store.ensure_repository()
    days = []
    for path in store.list("main", spec.dataset.prefix):
        m = DAY.search(path)
        if m:
            days.append(dt.date.fromisoformat(m.group(1)))
    return sorted(days)


def seed_demo(
    store: VersionedStore,
    spec: ModelSpec,
    days: int = DEMO_DAYS,
    rows: int = DEMO_ROWS,
    seed: int = 0,
    end: dt.date | None = None,
) -> tuple[int, list[IngestResult]]:
    """Ingest the missing demo days ending at ``end`` (default yesterday).

    Returns the number of days ingested and the results of any rejected batch.
    """
    if not spec.simulator:
        raise ValueError(f"spec {spec.name!r} has no simulator: ingest its data with --file")
    end = end or dt.date.today() - dt.timedelta(days=1)
    have = set(batch_days(store, spec))
    todo = [end - dt.timedelta(days=i) for i in reversed(range(days))]
    todo = [d for d in todo if d not in have]
    rejected = []
    for day in todo:
        df = simulate_batch(spec.simulator, day, rows=rows, seed=seed)
        result = ingest_batch(store, spec, to_csv_bytes(df), f"day-{day}", {"day": str(day)})
        if not result.published:
            rejected.append(result)
    return len(todo), rejected
