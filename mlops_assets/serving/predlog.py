"""The prediction log: every served row (inputs, output, model version, time, request id),
appended to JSON-lines segment files by one writer thread and committed into the versioned
store in batches, for the monitoring assets to read.

Durability (fsync policy). A request is answered only after its line is written *and*
fsynced: ``await write(...)`` resolves when the writer thread has fdatasync'ed the segment
that holds it. The writer works in groups (group commit): it takes every line queued since
its last sync, writes them, syncs each touched segment once, and resolves all their waiters
in one hand-off to the event loop. Under load a group holds many requests, so a sync costs
little per request (measured: see README, "prediction log"). A new segment's directory entry
is synced too, and so is every rename, so a segment never vanishes after a crash of the node.

Recovery. After ``kill -9`` (or a node crash) the segments left ``open-`` are closed at the
next start: a torn last line (never acknowledged: its sync had not returned) is quarantined,
and the segments are committed. A line that cannot be parsed is moved to
``_quarantine/<model>/`` and counted; it never blocks later commits.

Memory is bounded: the queue holds at most ``max_pending_rows`` rows; a request that would
exceed it waits (backpressure) instead of being dropped. ``close()`` (called on SIGTERM by the
server's shutdown) drains the queue, closes the open segment and commits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path

import orjson

from mlops_assets.store import NothingToCommit, VersionedStore
from mlops_assets.store.local import fsync_dir

PREFIX = "predictions/"
QUARANTINE = "_quarantine"


def predictions_repository(dataset_repository: str) -> str:
    return f"{dataset_repository}-predictions"


def parse_line(line: bytes) -> dict | None:
    """One logged request, or None if the line is not one (torn, corrupt)."""
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("rows"), int):
        return None
    if not isinstance(rec.get("inputs"), dict) or "request_id" not in rec:
        return None
    return rec


def read_rows(data: bytes) -> list[dict]:
    """The rows of a log segment: one dict per served row (inputs, outputs, version, ...).
    A line that cannot be parsed is skipped (the writer quarantines them before commit)."""
    out = []
    for line in data.splitlines():
        if not line.strip():
            continue
        rec = parse_line(line)
        if rec is None:
            continue
        outputs = [k for k in ("prediction", "probability") if k in rec]
        for i in range(rec["rows"]):
            row = {
                "timestamp": rec["timestamp"],
                "request_id": rec["request_id"],
                "row": i,
                "model": rec["model"],
                "model_version": rec["model_version"],
                "synthetic": rec.get("synthetic"),
                "inputs": {c: v[i] for c, v in rec["inputs"].items()},
            }
            for o in outputs:
                row[o] = rec[o][i]
            out.append(row)
    return out


class LogError(RuntimeError):
    """A row could not be made durable; the request must not be acknowledged."""


class PredictionLog:
    def __init__(
        self,
        directory: Path,
        commit: Callable[[str, list[Path]], None] | None = None,
        segment_rows: int = 5000,
        segment_seconds: float = 60.0,
        max_pending_rows: int = 200_000,
        fsync: bool = True,
        models: tuple[str, ...] = (),
    ):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.commit = commit
        self.segment_rows = segment_rows
        self.segment_seconds = segment_seconds
        self.max_pending_rows = max_pending_rows
        self.fsync = fsync
        self._queue: deque[tuple] = deque()
        self._pending_rows = 0
        self._cond = threading.Condition()
        self._closing = False
        self._open: dict[str, tuple] = {}  # model -> (file, path, rows, opened_at)
        # Counters, exported as Prometheus metrics (read by /metrics; ints under the GIL)
        self.rows_written: dict[str, int] = defaultdict(int)  # model
        self.rows_committed: dict[str, int] = defaultdict(int)  # model
        self.commits: dict[str, int] = defaultdict(int)  # model
        self.commit_failures: dict[str, int] = defaultdict(int)  # model
        self.quarantined: dict[str, int] = defaultdict(int)  # model: lines moved aside
        # Segments this process closed itself, with their row counts: every line was written
        # whole and synced by the writer, so their commit neither re-checks nor re-counts them
        # (parsing thousands of lines on the committer holds the GIL and stalls requests).
        # Only segments recovered after a crash can hold a torn line; those are checked.
        self._closed_rows: dict[Path, int] = {}
        for m in models:  # every series exists from the start, so alerts can rate() it
            for d in (self.rows_written, self.rows_committed, self.commits):
                d[m] += 0
            self.commit_failures[m] += 0
            self.quarantined[m] += 0
        self.write_failures = 0
        self.syncs = 0  # group syncs: each made a group of requests durable at once
        self.commit_errors: deque[str] = deque(maxlen=100)
        self.write_errors: deque[str] = deque(maxlen=100)
        self._recover()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        # Commits run on their own thread: a slow or unreachable store never stalls writing.
        self._commit_wake = threading.Event()
        self._commit_stop = threading.Event()
        self._committer = threading.Thread(
            target=self._commit_loop, name="prediction-log-commit", daemon=True
        )
        self._committer.start()
        self._commit_wake.set()  # segments recovered from a crash: commit them now

    # ---- called from the event loop -----------------------------------------------------

    def full(self) -> bool:
        return self._pending_rows >= self.max_pending_rows

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def append(
        self,
        model: str,
        version: str,
        request_id: str,
        columns: dict,
        outputs: dict,
        synthetic: str | None = None,
        waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future] | None = None,
    ) -> None:
        """Queue one request's rows; ``waiter`` (loop, future) is resolved once they are
        durable, or failed with LogError if they could not be written."""
        n = len(next(iter(outputs.values())))
        item = (time.time(), model, version, request_id, columns, outputs, n, synthetic, waiter)
        with self._cond:
            self._queue.append(item)
            self._pending_rows += n
            self._cond.notify()

    async def write(
        self,
        model: str,
        version: str,
        request_id: str,
        columns: dict,
        outputs: dict,
        synthetic: str | None = None,
    ) -> None:
        """Append and wait until the rows are on disk (written and fsynced)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.append(model, version, request_id, columns, outputs, synthetic, (loop, fut))
        await fut

    def counters(self) -> dict[str, tuple[str, str, tuple[str, ...], dict[tuple, float]]]:
        """The log's health as Prometheus metrics: name -> (help, type, labels, values)."""

        def by_model(d: dict[str, int]) -> dict[tuple, float]:
            # list() copies in one step under the GIL: the writer may add a model meanwhile
            return {(m,): v for m, v in list(d.items())}

        uncommitted = sum(1 for _ in self.dir.glob("*/segment-*.jsonl"))
        return {
            "mlops_prediction_log_rows_written_total": (
                "Rows written and fsynced to the prediction log, by model.",
                "counter",
                ("model",),
                by_model(self.rows_written),
            ),
            "mlops_prediction_log_syncs_total": (
                "Group syncs: each made every row queued since the last one durable.",
                "counter",
                (),
                {(): self.syncs},
            ),
            "mlops_prediction_log_write_errors_total": (
                "Requests whose rows could not be written or synced (answered 503).",
                "counter",
                (),
                {(): self.write_failures},
            ),
            "mlops_prediction_log_commits_total": (
                "Commits of closed segments into the versioned store, by model.",
                "counter",
                ("model",),
                by_model(self.commits),
            ),
            "mlops_prediction_log_rows_committed_total": (
                "Rows committed into the versioned store, by model.",
                "counter",
                ("model",),
                by_model(self.rows_committed),
            ),
            "mlops_prediction_log_commit_errors_total": (
                "Commits the versioned store refused (segments kept and retried), by model.",
                "counter",
                ("model",),
                by_model(self.commit_failures),
            ),
            "mlops_prediction_log_quarantined_lines_total": (
                "Lines that could not be parsed, moved to _quarantine/, by model.",
                "counter",
                ("model",),
                by_model(self.quarantined),
            ),
            "mlops_prediction_log_uncommitted_segments": (
                "Closed segments on disk waiting for a commit.",
                "gauge",
                (),
                {(): uncommitted},
            ),
        }

    # ---- writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait(timeout=1.0)
                    if not self._queue:
                        break
                batch = list(self._queue)
                self._queue.clear()
                closing = self._closing and not batch
            self._write_group(batch)
            with self._cond:
                self._pending_rows -= sum(item[6] for item in batch)
            try:
                self._rotate(force=False)
            except Exception as e:
                self.commit_errors.append(f"rotate: {type(e).__name__}: {e}")
            if closing:
                return

    def _write_group(self, batch: list[tuple]) -> None:
        """Write every queued request, sync each touched segment once, then tell the waiters:
        those whose line is on disk succeed, the others fail (and are not acknowledged)."""
        if not batch:  # an idle wake-up: nothing to sync
            return
        done: list[tuple] = []
        failed: list[tuple] = []
        touched: dict[str, object] = {}
        for item in batch:
            try:
                touched[item[1]] = self._write(*item[:8])
                done.append(item)
            except Exception as e:  # one bad record must not stop the log
                self.write_failures += 1
                self.write_errors.append(f"request {item[3]}: {type(e).__name__}: {e}")
                failed.append((item, e))
        try:
            for f in touched.values():
                f.flush()  # type: ignore[attr-defined]
                if self.fsync:
                    os.fdatasync(f.fileno())  # type: ignore[attr-defined]
            self.syncs += 1
        except Exception as e:  # the disk refused: nothing in this group is durable
            self.write_failures += len(done)
            self.write_errors.append(f"sync: {type(e).__name__}: {e}")
            failed += [(item, e) for item in done]
            done = []
        for item in done:
            self.rows_written[item[1]] += item[6]
        self._settle(done, failed)

    @staticmethod
    def _settle(done: list[tuple], failed: list[tuple]) -> None:
        """Resolve the waiters, one hand-off per event loop for the whole group."""
        by_loop: dict = defaultdict(list)
        for item in done:
            if item[8] is not None:
                by_loop[item[8][0]].append((item[8][1], None))
        for item, e in failed:
            if item[8] is not None:
                error = LogError(f"prediction log: could not write request {item[3]}: {e}")
                by_loop[item[8][0]].append((item[8][1], error))
        for loop, waiters in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve, waiters)

    def _write(self, ts, model, version, request_id, columns, outputs, n, synthetic):
        # One line per request, columnar: every row is in it, and encoding it costs one call.
        record = {
            "timestamp": dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds"),
            "request_id": request_id,
            "model": model,
            "model_version": version,
            "rows": n,
            "inputs": columns,
            **outputs,
        }
        if synthetic:
            record["synthetic"] = synthetic
        line = orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        f, path, rows, opened = self._segment(model)
        f.write(line)
        self._open[model] = (f, path, rows + n, opened)
        return f

    def _recover(self) -> None:
        """Segments left open by a crash: quarantine what cannot be parsed (a torn last line
        was never acknowledged), then treat them as closed and commit them."""
        for path in sorted(self.dir.glob("*/open-*.jsonl")):
            self._clean(path)
            data = path.read_bytes()
            if data:
                closed = path.with_name(path.name.replace("open-", "segment-"))
                os.replace(path, closed)
                fsync_dir(path.parent)
            else:
                path.unlink()

    def _clean(self, path: Path) -> int:
        """Move every line of ``path`` that cannot be parsed to the quarantine (appended,
        with the segment's name), rewrite the segment without them; return how many."""
        data = path.read_bytes()
        good: list[bytes] = []
        bad: list[bytes] = []
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            (good if parse_line(line) is not None else bad).append(line)
        if not bad:
            if data and not data.endswith(b"\n"):  # a complete last line missing its newline
                path.write_bytes(data + b"\n")
            return 0
        model = path.parent.name
        folder = self.dir / QUARANTINE / model
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{path.stem}.bad", "ab") as q:
            q.write(b"".join(line + b"\n" for line in bad))
            q.flush()
            os.fsync(q.fileno())
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(line + b"\n" for line in good))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
        self.quarantined[model] += len(bad)
        self.commit_errors.append(
            f"{model}: {len(bad)} line(s) of {path.name} could not be parsed; moved to "
            f"{folder / (path.stem + '.bad')}"
        )
        return len(bad)

    def _segment(self, model: str):
        if model not in self._open:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
            path = self.dir / model / f"open-{stamp}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            f = open(path, "ab")  # noqa: SIM115 - kept open across groups
            if self.fsync:
                fsync_dir(path.parent)  # the new file's entry survives a crash of the node
            self._open[model] = (f, path, 0, time.monotonic())
        return self._open[model]

    def _rotate(self, force: bool) -> None:
        for model, (f, path, rows, opened) in list(self._open.items()):
            age = time.monotonic() - opened
            if force or rows >= self.segment_rows or (rows and age >= self.segment_seconds):
                f.flush()
                os.fsync(f.fileno())
                f.close()
                closed = path.with_name(path.name.replace("open-", "segment-"))
                self._closed_rows[closed] = rows  # before the committer can see the file
                os.replace(path, closed)
                fsync_dir(path.parent)
                del self._open[model]
                self._commit_wake.set()

    def _commit_loop(self) -> None:
        backoff = 1.0
        while not self._commit_stop.is_set():
            self._commit_wake.wait(timeout=backoff)
            self._commit_wake.clear()
            failed = self._commit_closed()
            backoff = min(backoff * 2, 60.0) if failed else 1.0

    def _commit_closed(self) -> bool:
        """Commit every closed segment; True if the store refused some (kept for later)."""
        if self.commit is None:
            return False
        failed = False
        models = (p for p in self.dir.iterdir() if p.is_dir() and p.name != QUARANTINE)
        for model_dir in sorted(models):
            closed = sorted(model_dir.glob("segment-*.jsonl"))
            if not closed:
                continue
            model = model_dir.name
            try:
                for p in closed:  # a corrupt line never blocks the commit of the others
                    if p not in self._closed_rows:
                        self._clean(p)
                closed = [p for p in closed if p.stat().st_size > 0]
                rows = sum(
                    self._closed_rows[p]
                    if p in self._closed_rows
                    else sum(r["rows"] for r in _records(p.read_bytes()))
                    for p in closed
                )
                if closed:
                    self.commit(model, closed)
            except NothingToCommit:  # committed before a crash kept us from renaming them
                rows = 0
            except Exception as e:  # the store is down: keep the files, try again later
                self.commit_errors.append(f"{model}: {type(e).__name__}: {e}")
                self.commit_failures[model] += 1
                failed = True
                continue
            self.commits[model] += 1
            self.rows_committed[model] += rows
            for p in sorted(model_dir.glob("segment-*.jsonl")):
                if p in closed or p.stat().st_size == 0:
                    p.rename(p.with_suffix(".committed"))
                    self._closed_rows.pop(p, None)
        return failed

    def close(self) -> None:
        """Drain, close every open segment and commit it. Safe to call twice."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=60)
        if not self._thread.is_alive():  # never race a writer that is still running
            self._rotate(force=True)
        self._commit_stop.set()
        self._commit_wake.set()
        self._committer.join(timeout=60)
        if not self._committer.is_alive():
            self._commit_closed()  # the last segments, on this thread


def _resolve(waiters: list[tuple[asyncio.Future, Exception | None]]) -> None:
    for fut, error in waiters:
        if fut.done():  # the request was cancelled (client gone)
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)


def _records(data: bytes) -> list[dict]:
    return [r for r in map(parse_line, data.splitlines()) if r is not None]


def store_committer(
    open_repository: Callable[[str], VersionedStore], repositories: dict[str, str]
) -> Callable[[str, list[Path]], None]:
    """Commit closed segments of each model into its predictions repository, one commit per
    batch of segments, on main (a log: no audit branch needed)."""

    def commit(model: str, paths: list[Path]) -> None:
        store = open_repository(repositories[model])
        store.ensure_repository()
        rows = 0
        for p in paths:
            data = p.read_bytes()
            rows += sum(r["rows"] for r in _records(data))
            day = p.name.removeprefix("segment-")[:8]
            store.put("main", f"{PREFIX}{model}/{day}/{p.name}", data)
        store.commit(
            "main",
            f"prediction log: {len(paths)} segment(s), {rows} row(s) of {model}",
            {"rows": str(rows), "segments": str(len(paths))},
        )

    return commit
