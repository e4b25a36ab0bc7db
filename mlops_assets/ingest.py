"""Write-audit-publish ingestion of one batch into a spec's repository.

1. **Write**: the batch (one file, or every file of a folder) goes to a fresh ingest branch cut
   from main, and is committed there.
2. **Audit**: the spec's quality rules run against *that commit* (read back from the store),
   chunk by chunk, including duplicate keys within the batch and against what main holds.
3. **Publish**: only a passing batch is merged into main; the ingest branch is then deleted.
   A failing batch stays on its branch for inspection, and main never sees it.

Sources: CSV or Parquet, a single file or a folder of them, columns in any order. Batches are
stored as CSV, the dataset's one format (a Parquet file is converted row group by row group),
so every reader of the dataset reads one format. Plain library code: no Dagster import.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlops_assets.quality import Violation, audit_stream
from mlops_assets.specs import ModelSpec
from mlops_assets.store import VersionedStore

SOURCE_SUFFIXES = (".csv", ".parquet", ".pq")
# progress(file, rows audited so far in it, its size in bytes)
Progress = Callable[[str, int, int], None]


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
    paths: list[str] = field(default_factory=list)

    def summary(self) -> str:
        what = self.path if len(self.paths) <= 1 else f"{self.path} ({len(self.paths)} files)"
        if self.published:
            return f"published {what} ({self.rows} rows) to main at commit {self.main_commit}"
        lines = [
            f"rejected {what}: it stays on branch '{self.branch}' "
            f"(commit {self.ingest_commit}); main is unchanged at {self.main_commit}"
        ]
        lines += [f"  - {v}" for v in self.violations]
        return "\n".join(lines)


def _slug(text: str) -> str:
    return re.sub(r"[^\w-]+", "-", text).strip("-") or "batch"


def main_keys(store: VersionedStore, spec: ModelSpec, ref: str) -> set[str]:
    """Keys of every batch already on ``ref`` (only the key column is read); files that do not
    parse contribute nothing."""
    import pandas as pd

    keys: set[str] = set()
    key = spec.dataset.key
    for path in store.list(ref, spec.dataset.prefix):
        try:
            col = pd.read_csv(
                io.BytesIO(store.get(ref, path)),
                usecols=[key],
                dtype=str,
                keep_default_na=False,
                na_values=[""],
            )[key]
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError):
            continue
        keys.update(col.dropna())
    return keys


# ---- sources -------------------------------------------------------------------------------


def parquet_to_csv(path: Path, batch_rows: int = 100_000) -> bytes:
    """A Parquet file as CSV bytes, converted ``batch_rows`` at a time (never the whole table
    as a frame). Dates are written as YYYY-MM-DD, as the dataset's date columns expect."""
    import pandas as pd
    import pyarrow.parquet as pq

    out = io.BytesIO()
    try:
        source = pq.ParquetFile(path)
    except Exception as e:
        raise ValueError(
            f"{path}: not a readable Parquet file ({type(e).__name__}: {e}): re-export it"
        ) from None
    header = True
    for batch in source.iter_batches(batch_size=batch_rows):
        frame = batch.to_pandas()
        for col in frame.columns:
            if pd.api.types.is_datetime64_any_dtype(frame[col]):
                values = frame[col]
                has_time = (values.dropna() != values.dropna().dt.normalize()).any()
                fmt = "%Y-%m-%dT%H:%M:%S" if has_time else "%Y-%m-%d"
                frame[col] = values.dt.strftime(fmt)
        frame.to_csv(out, index=False, header=header)
        header = False
    if header:  # no row group at all: still a header, so the audit reports 'no rows'
        pd.DataFrame(columns=source.schema_arrow.names).to_csv(out, index=False)
    return out.getvalue()


def read_source(path: str | Path) -> list[tuple[str, bytes]]:
    """``[(name, CSV bytes)]`` for a CSV or Parquet file, or for every such file of a folder
    (sorted by name; other files are ignored). A missing path or an empty folder is an error
    naming it."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SOURCE_SUFFIXES)
        if not files:
            raise ValueError(
                f"folder {path} holds no .csv or .parquet files: point --file at a file or a "
                "folder of batch files"
            )
    elif path.is_file():
        if path.suffix.lower() not in SOURCE_SUFFIXES:
            raise ValueError(
                f"{path}: unsupported file type {path.suffix!r}: ingest .csv or .parquet files"
            )
        files = [path]
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")
    out = []
    for f in files:
        data = parquet_to_csv(f) if f.suffix.lower() in (".parquet", ".pq") else f.read_bytes()
        out.append((f.stem, data))
    return out


# ---- write, audit, publish -----------------------------------------------------------------


def ingest_files(
    store: VersionedStore,
    spec: ModelSpec,
    files: list[tuple[str, bytes]],
    batch_name: str,
    metadata: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> IngestResult:
    """Write ``files`` (``[(name, CSV bytes)]``) as one batch through write-audit-publish: one
    ingest branch, one commit, one audit, one merge. A single file is stored as
    ``<prefix><batch_name>.csv``; several as ``<prefix><batch_name>-<name>.csv``."""
    if not files:
        raise ValueError(f"batch {batch_name!r}: no files to ingest")
    store.ensure_repository()
    name = _slug(batch_name)
    prefix = spec.dataset.prefix
    if len(files) == 1:
        paths = [f"{prefix}{name}.csv"]
    else:
        paths = [f"{prefix}{name}-{_slug(stem)}.csv" for stem, _ in files]
        if len(set(paths)) != len(paths):
            raise ValueError(f"batch {batch_name!r}: two files have the same name: rename one")
    on_main = set(store.list("main", prefix))
    clash = [p for p in paths if p in on_main]
    if clash:
        raise FileExistsError(
            f"batch {clash[0]!r} is already on main of {spec.dataset.repository!r}: "
            "use a new batch name"
        )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    branch = f"ingest-{name}-{stamp}-{uuid.uuid4().hex[:6]}"
    base = store.create_branch(branch, "main")
    for path, (_, data) in zip(paths, files, strict=True):
        store.put(branch, path, data)
    label = paths[0] if len(paths) == 1 else f"{prefix}{name}-*.csv"
    meta = {"batch": label, "source": "mlops ingest", **(metadata or {})}
    if len(paths) > 1:
        meta["files"] = str(len(paths))
    commit = store.commit(branch, f"Ingest {label}", meta)

    # Audit exactly what was committed, read back at the commit id, one chunk at a time.
    existing = main_keys(store, spec, base)
    seen: set[str] = set()
    violations: list[Violation] = []
    rows = 0
    for path in paths:
        raw = store.get(commit.id, path)

        def tick(done: int, path: str = path, size: int = len(raw)) -> None:
            if progress is not None:
                progress(path, done, size)

        n, problems = audit_stream(path, raw, spec.dataset, existing, seen, progress=tick)
        rows += n
        violations += problems
    if not violations:
        # Main may have moved while we audited (another ingest): re-check keys against it now.
        # The dataset's blocking duplicate_keys check is the backstop for a race past this.
        head = store.head("main")
        if head != base:
            again = seen & main_keys(store, spec, head)
            if again:
                violations.append(
                    Violation(
                        label,
                        spec.dataset.key,
                        "duplicate_keys",
                        f"{len(again)} key(s) reached main while this batch was audited "
                        f"(e.g. {sorted(again)[:3]}): a batch must bring new rows",
                    )
                )
    if violations:
        return IngestResult(
            spec.name, label, branch, commit.id, False, store.head("main"), rows, violations, paths
        )
    merged = store.merge(
        branch,
        "main",
        message=f"Publish {label} (audit passed)",
        metadata={**meta, "audit": "passed", "ingest_commit": commit.id, "rows": str(rows)},
    )
    store.delete_branch(branch)
    return IngestResult(spec.name, label, branch, commit.id, True, merged, rows, [], paths)


def ingest_batch(
    store: VersionedStore,
    spec: ModelSpec,
    data: bytes,
    batch_name: str,
    metadata: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> IngestResult:
    """Write ``data`` (CSV bytes) as ``<prefix><batch_name>.csv`` through write-audit-publish."""
    return ingest_files(store, spec, [(batch_name, data)], batch_name, metadata, progress)


def ingest_path(
    store: VersionedStore,
    spec: ModelSpec,
    source: str | Path,
    batch_name: str | None = None,
    metadata: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> IngestResult:
    """Ingest a CSV or Parquet file, or a folder of them, as one batch (named after the file
    or folder unless ``batch_name`` is given)."""
    source = Path(source)
    files = read_source(source)
    return ingest_files(
        store,
        spec,
        files,
        batch_name or source.stem,
        {"file": source.name, **(metadata or {})},
        progress,
    )
