"""Prediction-log upkeep: closed segments compacted per model and day into Parquet, and a
retention policy for the raw segments, both as commits of the predictions repository.

Layout (beside the raw log ``predictions/<model>/<YYYYMMDD>/segment-*.jsonl``)::

    compacted/<model>/<YYYY-MM-DD>.parquet        every row of the day's segments
    compacted/<model>/<YYYY-MM-DD>.segments.json  which segments it holds (rows, raw bytes)

- **Day.** A segment belongs to the UTC day of its newest row's timestamp (a segment that spans
  midnight goes with the later day, so it is never expired early). ``today`` is passed in: the
  library never reads the clock. Only segments of days before ``today`` are compacted: today's
  are still arriving. Segments still open on a server, or staged but not committed, are not in
  the commit the upkeep reads, so they cannot be compacted.
- **Compaction** reads the head of ``main``, works on a branch of its own, writes the day files
  (a day that already has one is rewritten with the late segments added), checks that the
  Parquet decodes to exactly the rows it was made of, and commits. Raw segments stay.
- **Retention** deletes, in a second commit, the raw segments that are compacted and whose day
  is more than ``retention_days`` before ``today``. A segment that is not compacted is never
  deleted. Deleted segments stay in the history.
- The branch is merged into ``main`` (retried while the prediction log's committer has staged
  changes there): the log keeps committing meanwhile, on other paths.

Readers (``logged_rows``) take a segment's rows from its day file where it has one and from the
raw segment otherwise, so every row is read exactly once, in the order of the raw log.

Plain library code: no Dagster import; pyarrow is imported where Parquet is read or written.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import heapq
import io
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson

from mlops_assets.serving.predlog import PREFIX, read_rows
from mlops_assets.store import MergeConflict, NotFound, NothingToCommit, VersionedStore

COMPACTED = "compacted/"
DEFAULT_RETENTION_DAYS = 30
FORMAT = 1
# The fields every served row has (see predlog.read_rows), in their order there.
FIXED = ("timestamp", "request_id", "row", "model", "model_version", "synthetic")


class UpkeepError(RuntimeError):
    """The upkeep could not finish; nothing changed on ``main``. The message says why."""


@dataclass(frozen=True)
class SegmentEntry:
    """A compacted raw segment: the day file holding its rows."""

    segment: str
    day: dt.date
    file: str
    rows: int
    bytes: int


@dataclass
class UpkeepResult:
    """What one upkeep run did to one model's log."""

    model: str
    today: dt.date
    retention_days: int
    base_commit: str | None = None
    compacted_segments: int = 0
    compacted_rows: int = 0
    days: list[str] = field(default_factory=list)
    raw_bytes: int = 0  # the JSON-lines bytes of the segments compacted by this run
    parquet_bytes_before: int = 0  # the day files this run rewrote, before
    parquet_bytes_after: int = 0  # the day files this run wrote
    waiting_segments: int = 0  # closed segments of ``today`` or later: compacted another day
    unreadable_segments: list[str] = field(default_factory=list)  # no row parses: left raw
    expired_segments: int = 0
    expired_rows: int = 0
    expired_bytes: int = 0
    compaction_commit: str | None = None
    retention_commit: str | None = None
    merge_commit: str | None = None

    def describe(self) -> str:
        if self.base_commit is None:
            return f"{self.model}: nothing logged yet"
        return (
            f"{self.model} as of {self.today}: compacted {self.compacted_segments} segment(s), "
            f"{self.compacted_rows} row(s) into {len(self.days)} day file(s) "
            f"({self.raw_bytes} B of JSON lines -> {self.parquet_bytes_after} B of Parquet, "
            f"{self.parquet_bytes_before} B rewritten); expired {self.expired_segments} raw "
            f"segment(s) older than {self.retention_days} day(s) ({self.expired_bytes} B); "
            f"{self.waiting_segments} segment(s) of today or later wait"
        )


def compacted_prefix(model: str) -> str:
    return f"{COMPACTED}{model}/"


def day_paths(model: str, day: dt.date) -> tuple[str, str]:
    """The day file and its segment index."""
    base = f"{compacted_prefix(model)}{day.isoformat()}"
    return f"{base}.parquet", f"{base}.segments.json"


def row_day(timestamp: str) -> dt.date:
    """The UTC day of a logged timestamp (ISO 8601 with an offset, as the log writes it)."""
    t = dt.datetime.fromisoformat(timestamp)
    if t.tzinfo is None:
        raise UpkeepError(f"logged timestamp {timestamp!r} has no UTC offset")
    return t.astimezone(dt.UTC).date()


# ---- Parquet ------------------------------------------------------------------------------


def _column(values: builtins.list):
    """One Parquet column: typed where every value has one JSON type, else JSON text (so a
    column that mixes 3 and 3.5, or holds lists, reads back exactly as it was logged)."""
    import pyarrow as pa

    kinds = {type(v) for v in values if v is not None}
    if kinds == {bool}:
        return pa.array(values, pa.bool_()), False
    if kinds == {int} and all(v is None or -(2**63) <= v < 2**63 for v in values):
        return pa.array(values, pa.int64()), False
    if kinds == {float}:
        return pa.array(values, pa.float64()), False
    if kinds <= {str}:
        return pa.array(values, pa.string()), False
    encoded = [None if v is None else orjson.dumps(v).decode() for v in values]
    return pa.array(encoded, pa.string()), True


def encode_day(segments: dict[str, builtins.list[dict]]) -> bytes:
    """The rows of ``segments`` (segment path -> its rows, as ``read_rows`` gives them) as one
    Parquet file, in segment order, then the order of the segment."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ordered = [(s, i, r) for s in sorted(segments) for i, r in enumerate(segments[s])]
    # Which inputs and outputs a row has, in its order: the key sets are few (one per request
    # schema), so each row stores a small number and a missing key stays missing on read.
    key_sets: dict[tuple, int] = {}
    keys = []
    for _, _, r in ordered:
        ks = (
            tuple(r["inputs"]),
            tuple(k for k in r if k not in FIXED and k != "inputs"),
        )
        keys.append(key_sets.setdefault(ks, len(key_sets)))
    inputs = list(dict.fromkeys(c for ks in key_sets for c in ks[0]))
    outputs = list(dict.fromkeys(o for ks in key_sets for o in ks[1]))
    columns: dict[str, builtins.list] = {
        "segment": [s for s, _, _ in ordered],
        "seq": [i for _, i, _ in ordered],
        "_keys": keys,
        **{f: [r[f] for _, _, r in ordered] for f in FIXED},
        **{f"output.{o}": [r.get(o) for _, _, r in ordered] for o in outputs},
        **{f"input.{c}": [r["inputs"].get(c) for _, _, r in ordered] for c in inputs},
    }
    arrays, json_columns = {}, []
    for name, values in columns.items():
        arrays[name], as_json = _column(values)
        if as_json:
            json_columns.append(name)
    # A typed time column for whoever queries the file (DuckDB, pandas); readers of the log
    # use the logged text, which is exact.
    arrays["time"] = pa.array(
        [dt.datetime.fromisoformat(r["timestamp"]) for _, _, r in ordered],
        pa.timestamp("ms", tz="UTC"),
    )
    meta = {
        "mlops.format": str(FORMAT),
        "mlops.key_sets": orjson.dumps([[list(a), list(b)] for a, b in key_sets]).decode(),
        "mlops.json_columns": orjson.dumps(json_columns).decode(),
    }
    table = pa.table(arrays).replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


class DayFile:
    """A decoded day file. Row dicts are built per segment when asked for (a segment's rows
    are adjacent in the file), so a window that needs a few segments does not build the day."""

    def __init__(self, data: bytes, where: str = "day file"):
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        if meta.get("mlops.format") != str(FORMAT):
            raise UpkeepError(
                f"{where}: not a compacted prediction log of format {FORMAT} "
                f"(mlops.format={meta.get('mlops.format')!r}); it was not written by this upkeep"
            )
        self.where = where
        self._table = table
        self._key_sets = [(tuple(a), tuple(b)) for a, b in orjson.loads(meta["mlops.key_sets"])]
        self._json = set(orjson.loads(meta["mlops.json_columns"]))
        self._cols: dict[str, builtins.list] | None = None
        self.spans: dict[str, tuple[int, int]] = {}  # segment -> (first row, rows)
        for i, segment in enumerate(table.column("segment").to_pylist()):
            first, n = self.spans.get(segment, (i, 0))
            self.spans[segment] = (first, n + 1)

    def _columns(self) -> dict[str, builtins.list]:
        # Whole columns at once: converting in bulk is cheap, a slice per segment is not.
        if self._cols is None:
            t = self._table
            cols = {c: t.column(c).to_pylist() for c in t.column_names if c != "time"}
            for c in self._json:
                cols[c] = [None if v is None else orjson.loads(v) for v in cols[c]]
            self._cols = cols
        return self._cols

    def rows(self, segment: str) -> builtins.list[dict]:
        """The rows of ``segment``, as ``read_rows`` gave them (none if it is not here)."""
        if segment not in self.spans:
            return []
        first, n = self.spans[segment]
        cols = self._columns()
        out = []
        for i in range(first, first + n):
            ins, outs = self._key_sets[cols["_keys"][i]]
            r = {f: cols[f][i] for f in FIXED}
            r["inputs"] = {c: cols[f"input.{c}"][i] for c in ins}
            for o in outs:
                r[o] = cols[f"output.{o}"][i]
            out.append(r)
        return out


def decode_day(data: bytes, where: str = "day file") -> dict[str, builtins.list[dict]]:
    """A day file's rows by segment, each as ``read_rows`` gave it."""
    day = DayFile(data, where)
    return {segment: day.rows(segment) for segment in day.spans}


# ---- reading --------------------------------------------------------------------------------


def _named_day(segment: str) -> dt.date | None:
    """The day in a raw segment's path (``predictions/<model>/<YYYYMMDD>/...``): the day it was
    opened, which is at most one day after the day of its rows (rows are stamped when they
    are queued, a moment before they are written)."""
    parts = segment.split("/")
    try:
        return dt.datetime.strptime(parts[-2], "%Y%m%d").date()
    except (IndexError, ValueError):
        return None


class Index:
    """Which segments of ``model`` are compacted at ``ref``, read one day index at a time,
    newest first, only as far back as a reader needs (the history grows a day file a day)."""

    def __init__(self, store: VersionedStore, ref: str, model: str):
        self.store, self.ref = store, ref
        self._days = sorted(
            (
                (dt.date.fromisoformat(p.rsplit("/", 1)[1].removesuffix(".segments.json")), p)
                for p in store.list(ref, compacted_prefix(model))
                if p.endswith(".segments.json")
            ),
            reverse=True,
        )
        self.entries: dict[str, SegmentEntry] = {}

    def load_since(self, day: dt.date | None) -> builtins.list[SegmentEntry]:
        """Load every day index of ``day`` or later (None: all); the entries it added."""
        added = []
        while self._days and (day is None or self._days[0][0] >= day):
            file_day, path = self._days.pop(0)
            index = orjson.loads(self.store.get(self.ref, path))
            for segment, e in index["segments"].items():
                entry = SegmentEntry(segment, file_day, index["file"], e["rows"], e["bytes"])
                self.entries[segment] = entry
                added.append(entry)
        return added

    @property
    def complete(self) -> bool:
        return not self._days

    @property
    def next_day(self) -> dt.date | None:
        """The newest day whose index is not loaded yet."""
        return self._days[0][0] if self._days else None


def read_index(
    store: VersionedStore, ref: str, model: str, since: dt.date | None = None
) -> dict[str, SegmentEntry]:
    """The compacted segments of ``model`` at ``ref`` (in day files of ``since`` or later, by
    default all): segment path -> where its rows are."""
    index = Index(store, ref, model)
    index.load_since(since)
    return index.entries


def logged_rows(store: VersionedStore, model: str, ref: str) -> Iterator[dict]:
    """Every row ``model``'s log holds at ``ref``, newest first (newest segment first, its rows
    last to first), each exactly once: from its day file if compacted, else from the raw segment.
    Day indexes and files are read only when the reader gets to them."""
    index = Index(store, ref, model)
    raw = store.list(ref, f"{PREFIX}{model}/")
    heap = [(_Desc(s), s) for s in raw]  # newest segment on top
    heapq.heapify(heap)
    loaded: dict[str, DayFile] = {}
    seen: set[str] = set()

    def load(day: dt.date | None) -> None:
        for entry in index.load_since(day):
            if entry.segment not in seen:
                heapq.heappush(heap, (_Desc(entry.segment), entry.segment))

    while heap or not index.complete:
        # Before the newest remaining segment is read, every day file that could hold a newer
        # one is loaded: a segment named after day N has rows of day N-1 or later.
        if not index.complete:
            if not heap:  # only compacted segments are left: the newest day file next
                load(index.next_day)
                continue
            top = _named_day(heap[0][1])
            need = None if top is None else top - dt.timedelta(days=1)
            newest_unread = index.next_day
            if need is None or (newest_unread is not None and newest_unread >= need):
                load(need)  # then look at the (maybe newer) top again
                continue
        _, segment = heapq.heappop(heap)
        if segment in seen:  # compacted and still raw: pushed twice
            continue
        seen.add(segment)
        entry = index.entries.get(segment)
        if entry is None:
            rows = read_rows(store.get(ref, segment))
        else:
            if entry.file not in loaded:
                if len(loaded) >= 2:  # segments of one day file are (nearly) adjacent
                    loaded.pop(next(iter(loaded)))
                loaded[entry.file] = DayFile(store.get(ref, entry.file), entry.file)
            rows = loaded[entry.file].rows(segment)
            if len(rows) != entry.rows:
                raise UpkeepError(
                    f"{store.describe()} at {ref[:12]}: {entry.file} holds {len(rows)} row(s) "
                    f"of {segment}, its index says {entry.rows}: the day file is damaged; "
                    "restore it from the commit that wrote it"
                )
        yield from reversed(rows)


class _Desc(str):
    """A string that sorts in reverse (heapq is a min-heap)."""

    __slots__ = ()

    def __lt__(self, other: str) -> bool:
        return str.__gt__(self, other)


# ---- upkeep ---------------------------------------------------------------------------------


def upkeep(
    store: VersionedStore,
    model: str,
    today: dt.date,
    retention_days: int = DEFAULT_RETENTION_DAYS,
    merge_attempts: int = 50,
    retry_seconds: float = 0.1,
) -> UpkeepResult:
    """Compact ``model``'s closed segments of days before ``today`` and expire raw segments
    that are compacted and more than ``retention_days`` days old; both as commits, merged into
    ``main``. Idempotent: a second run with the same ``today`` changes nothing."""
    if retention_days < 0:
        raise UpkeepError(
            f"retention_days={retention_days}: give 0 or more days of raw segments to keep"
        )
    result = UpkeepResult(model, today, retention_days)
    try:
        base = store.head("main")
    except NotFound:
        return result  # nothing logged yet
    result.base_commit = base
    raw = store.list(base, f"{PREFIX}{model}/")
    # Only day files that can hold a raw segment still here (a segment named after day N has
    # rows of day N-1 or later): the upkeep does not read the whole history every day.
    named = [d for d in map(_named_day, raw) if d is not None]
    since = min(named, default=today) - dt.timedelta(days=1) if len(named) == len(raw) else None
    index = read_index(store, base, model, since)
    pending: dict[dt.date, dict[str, builtins.list[dict]]] = defaultdict(dict)
    raw_bytes: dict[str, int] = {}
    for path in raw:
        if path in index:
            continue
        data = store.get(base, path)
        rows = read_rows(data)
        if not rows:
            result.unreadable_segments.append(path)
            continue
        day = max(row_day(r["timestamp"]) for r in rows)
        if day >= today:
            result.waiting_segments += 1
            continue
        pending[day][path] = rows
        raw_bytes[path] = len(data)

    cutoff = today - dt.timedelta(days=retention_days)
    day_of = {**{p: e.day for p, e in index.items()}, **{p: d for d in pending for p in pending[d]}}
    expired = [p for p in raw if p in day_of and day_of[p] < cutoff]
    if not pending and not expired:
        return result  # nothing to do: no branch, no commit

    # the model in the name: a branch left by a crash says whose it was
    branch = "upkeep-" + re.sub(r"[^\w-]", "-", model) + "-" + uuid.uuid4().hex[:12]
    store.create_branch(branch, base)
    try:
        if pending:  # (updates ``index`` with what it compacted)
            result.compaction_commit = _compact(
                store, branch, base, model, pending, raw_bytes, index, result
            )
        if expired:
            for p in expired:
                store.delete(branch, p)
                result.expired_rows += index[p].rows
                result.expired_bytes += index[p].bytes
            result.expired_segments = len(expired)
            result.retention_commit = store.commit(
                branch,
                f"prediction log upkeep: expired {len(expired)} raw segment(s) of {model} older "
                f"than {retention_days} day(s) before {today} (compacted; kept in history)",
                {
                    "upkeep": "retention",
                    "model": model,
                    "today": today.isoformat(),
                    "retention_days": str(retention_days),
                    "segments": str(len(expired)),
                    "rows": str(result.expired_rows),
                    "bytes": str(result.expired_bytes),
                },
            ).id
        if result.compaction_commit or result.retention_commit:
            result.merge_commit = _merge(store, branch, model, today, merge_attempts, retry_seconds)
    finally:
        with contextlib.suppress(NotFound):  # the upkeep's own branch: its work is merged
            store.delete_branch(branch)
    return result


def _compact(
    store: VersionedStore,
    branch: str,
    base: str,
    model: str,
    pending: dict[dt.date, dict[str, builtins.list[dict]]],
    raw_bytes: dict[str, int],
    index: dict[str, SegmentEntry],
    result: UpkeepResult,
) -> str:
    """Write the day files of ``pending`` on ``branch`` and commit; update ``index``."""
    for day in sorted(pending):
        parquet_path, index_path = day_paths(model, day)
        try:
            old_bytes = store.get(base, parquet_path)
            old_index = orjson.loads(store.get(base, index_path))["segments"]
            segments = decode_day(old_bytes, parquet_path)
            result.parquet_bytes_before += len(old_bytes)
        except NotFound:
            old_index, segments = {}, {}
        segments.update(pending[day])
        data = encode_day(segments)
        # The file must give back every row exactly as the segments hold it, before any raw
        # segment can ever be expired on the strength of it.
        if decode_day(data, parquet_path) != segments:
            raise UpkeepError(
                f"{parquet_path}: the Parquet written does not read back as the "
                f"{sum(map(len, segments.values()))} row(s) it was made of; nothing committed"
            )
        entries = {
            **old_index,
            **{s: {"rows": len(rows), "bytes": raw_bytes[s]} for s, rows in pending[day].items()},
        }
        day_index = {
            "format": FORMAT,
            "model": model,
            "day": day.isoformat(),
            "file": parquet_path,
            "rows": sum(e["rows"] for e in entries.values()),
            "segments": dict(sorted(entries.items())),
        }
        store.put(branch, parquet_path, data)
        store.put(branch, index_path, orjson.dumps(day_index, option=orjson.OPT_INDENT_2))
        for s, rows in pending[day].items():
            index[s] = SegmentEntry(s, day, parquet_path, len(rows), raw_bytes[s])
        result.days.append(day.isoformat())
        result.compacted_segments += len(pending[day])
        result.compacted_rows += sum(len(rows) for rows in pending[day].values())
        result.parquet_bytes_after += len(data)
    result.raw_bytes = sum(raw_bytes.values())
    return store.commit(
        branch,
        f"prediction log upkeep: compacted {result.compacted_segments} segment(s), "
        f"{result.compacted_rows} row(s) of {model} into {len(result.days)} day file(s)",
        {
            "upkeep": "compaction",
            "model": model,
            "days": ",".join(result.days),
            "segments": str(result.compacted_segments),
            "rows": str(result.compacted_rows),
            "raw_bytes": str(result.raw_bytes),
            "parquet_bytes": str(result.parquet_bytes_after),
        },
    ).id


def _merge(
    store: VersionedStore, branch: str, model: str, today: dt.date, attempts: int, wait: float
) -> str:
    """Merge the upkeep into ``main``. The prediction log and the labels commit on ``main``
    too: a merge meeting their staged changes is refused, and tried again."""
    error: MergeConflict | None = None
    for _ in range(attempts):
        try:
            return store.merge(
                branch,
                "main",
                f"prediction log upkeep of {model} as of {today}",
                {"upkeep": "merge", "model": model, "today": today.isoformat()},
            )
        except MergeConflict as e:
            if "uncommitted" not in str(e).lower():  # both changed a path: another upkeep won
                raise UpkeepError(
                    f"{store.describe()}: the upkeep of {model} conflicts with a change merged "
                    f"meanwhile ({e}); nothing changed on main: run the upkeep again"
                ) from None
            error = e
            time.sleep(wait)
        except NothingToCommit as e:  # cannot happen: the branch has a commit of its own
            raise UpkeepError(f"{store.describe()}: {e}") from None
    raise UpkeepError(
        f"{store.describe()}: main kept uncommitted changes through {attempts} merge attempts "
        f"({error}); nothing changed on main: run the upkeep again"
    )
