"""Write-audit-publish ingestion of one batch into a spec's repository.

1. **Write**: the batch goes to a fresh ingest branch cut from main, and is committed there.
2. **Audit**: the spec's quality rules run against *that commit* (read back from the store),
   including duplicate keys against what main already holds.
3. **Publish**: only a passing batch is merged into main; the ingest branch is then deleted.
   A failing batch stays on its branch for inspection, and main never sees it.

Plain library code: no Dagster import.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass, field

from mlops_assets.quality import SOURCE_COLUMN, Violation, audit_frame, parse_batch
from mlops_assets.specs import ModelSpec
from mlops_assets.store import VersionedStore


@dataclass
class IngestResult:
    spec: str
    path: str
    branch: str
    ingest_commit: str
    published: bool
    main_commit: str
    rows: int
    violations: list[Violation] = field(default_factory=list)

    def summary(self) -> str:
        if self.published:
            return f"published {self.path} ({self.rows} rows) to main at commit {self.main_commit}"
        lines = [
            f"rejected {self.path}: it stays on branch '{self.branch}' "
            f"(commit {self.ingest_commit}); main is unchanged at {self.main_commit}"
        ]
        lines += [f"  - {v}" for v in self.violations]
        return "\n".join(lines)


def _slug(text: str) -> str:
    return re.sub(r"[^\w-]+", "-", text).strip("-") or "batch"


def main_keys(store: VersionedStore, spec: ModelSpec, ref: str) -> set[str]:
    """Keys of every batch already on ``ref``; files that do not parse contribute nothing."""
    keys: set[str] = set()
    for path in store.list(ref, spec.dataset.prefix):
        df, _ = parse_batch(path, store.get(ref, path), spec.dataset)
        if df is not None and spec.dataset.key in df:
            keys.update(df[spec.dataset.key].dropna().astype(str))
    return keys


def ingest_batch(
    store: VersionedStore,
    spec: ModelSpec,
    data: bytes,
    batch_name: str,
    metadata: dict[str, str] | None = None,
) -> IngestResult:
    """Write ``data`` as ``<prefix><batch_name>.csv`` through write-audit-publish."""
    store.ensure_repository()
    name = _slug(batch_name)
    path = f"{spec.dataset.prefix}{name}.csv"
    if path in store.list("main", spec.dataset.prefix):
        raise FileExistsError(
            f"batch {path!r} is already on main of {spec.dataset.repository!r}: "
            "use a new batch name"
        )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    branch = f"ingest-{name}-{stamp}-{uuid.uuid4().hex[:6]}"
    base = store.create_branch(branch, "main")
    store.put(branch, path, data)
    meta = {"batch": path, "source": "mlops ingest", **(metadata or {})}
    commit = store.commit(branch, f"Ingest {path}", meta)

    # Audit exactly what was committed, read back at the commit id.
    raw = store.get(commit.id, path)
    df, violations = parse_batch(path, raw, spec.dataset)
    rows = 0
    if df is not None:
        rows = len(df)
        df[SOURCE_COLUMN] = path
        violations += audit_frame(df, spec.dataset, existing_keys=main_keys(store, spec, base))
    if not violations:
        # Main may have moved while we audited (another ingest): re-check keys against it now.
        # The dataset's blocking duplicate_keys check is the backstop for a race past this.
        head = store.head("main")
        if head != base and df is not None:
            violations += [
                v
                for v in audit_frame(df, spec.dataset, existing_keys=main_keys(store, spec, head))
                if v.rule == "duplicate_keys"
            ]
    if violations:
        return IngestResult(
            spec.name, path, branch, commit.id, False, store.head("main"), rows, violations
        )
    merged = store.merge(
        branch,
        "main",
        message=f"Publish {path} (audit passed)",
        metadata={**meta, "audit": "passed", "ingest_commit": commit.id, "rows": str(rows)},
    )
    store.delete_branch(branch)
    return IngestResult(spec.name, path, branch, commit.id, True, merged, rows)
