"""The prediction log: every served row (inputs, output, model version, time, request id),
appended to JSON-lines segment files by one writer thread and committed into the versioned
store in batches, for the monitoring assets to read.

Memory is bounded: the queue holds at most ``max_pending_rows`` rows; a request that would
exceed it waits (backpressure) instead of being dropped. ``close()`` (called on SIGTERM by the
server's shutdown) drains the queue, closes the open segment and commits it, so a clean stop
loses nothing. A segment file is fsynced before it counts as closed.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import orjson

from mlops_assets.store import NothingToCommit, VersionedStore

PREFIX = "predictions/"


def predictions_repository(dataset_repository: str) -> str:
    return f"{dataset_repository}-predictions"


def read_rows(data: bytes) -> list[dict]:
    """The rows of a log segment: one dict per served row (inputs, outputs, version, ...)."""
    out = []
    for line in data.splitlines():
        if not line.strip():
            continue
        rec = orjson.loads(line)
        outputs = [k for k in ("prediction", "probability") if k in rec]
        for i in range(rec["rows"]):
            row = {
                "timestamp": rec["timestamp"],
                "request_id": rec["request_id"],
                "row": i,
                "model": rec["model"],
                "model_version": rec["model_version"],
                "inputs": {c: v[i] for c, v in rec["inputs"].items()},
            }
            for o in outputs:
                row[o] = rec[o][i]
            out.append(row)
    return out


class PredictionLog:
    def __init__(
        self,
        directory: Path,
        commit: Callable[[str, list[Path]], None] | None = None,
        segment_rows: int = 5000,
        segment_seconds: float = 60.0,
        max_pending_rows: int = 200_000,
    ):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.commit = commit
        self.segment_rows = segment_rows
        self.segment_seconds = segment_seconds
        self.max_pending_rows = max_pending_rows
        self._queue: deque[tuple] = deque()
        self._pending_rows = 0
        self._cond = threading.Condition()
        self._closing = False
        self._open: dict[str, tuple] = {}  # model -> (file, path, rows, opened_at)
        self.rows_written = 0
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

    # ---- called from the event loop -----------------------------------------------------

    def full(self) -> bool:
        return self._pending_rows >= self.max_pending_rows

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def append(self, model: str, version: str, request_id: str, columns: dict, outputs: dict):
        n = len(next(iter(outputs.values())))
        with self._cond:
            self._queue.append((time.time(), model, version, request_id, columns, outputs, n))
            self._pending_rows += n
            self._cond.notify()

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
            for item in batch:
                try:
                    self._write(*item)
                except Exception as e:  # one bad record must not stop the log
                    self.write_errors.append(f"request {item[3]}: {type(e).__name__}: {e}")
            with self._cond:
                self._pending_rows -= sum(item[-1] for item in batch)
            try:
                self._rotate(force=False)
            except Exception as e:
                self.commit_errors.append(f"rotate: {type(e).__name__}: {e}")
            if closing:
                return

    def _write(self, ts, model, version, request_id, columns, outputs, n) -> None:
        # One line per request, columnar: every row is in it, and encoding it costs one call.
        f, path, rows, opened = self._segment(model)
        record = {
            "timestamp": dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds"),
            "request_id": request_id,
            "model": model,
            "model_version": version,
            "rows": n,
            "inputs": columns,
            **outputs,
        }
        f.write(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
        f.flush()
        self._open[model] = (f, path, rows + n, opened)
        self.rows_written += n

    def _recover(self) -> None:
        """Segments left open by a crash: drop a torn last line, then treat them as closed."""
        for path in self.dir.glob("*/open-*.jsonl"):
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                data = data[: data.rfind(b"\n") + 1]
                path.write_bytes(data)
            if data:
                os.replace(path, path.with_name(path.name.replace("open-", "segment-")))
            else:
                path.unlink()

    def _segment(self, model: str):
        if model not in self._open:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
            path = self.dir / model / f"open-{stamp}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._open[model] = (open(path, "a", encoding="utf-8"), path, 0, time.monotonic())  # noqa: SIM115
        return self._open[model]

    def _rotate(self, force: bool) -> None:
        for model, (f, path, rows, opened) in list(self._open.items()):
            age = time.monotonic() - opened
            if force or rows >= self.segment_rows or (rows and age >= self.segment_seconds):
                f.flush()
                os.fsync(f.fileno())
                f.close()
                closed = path.with_name(path.name.replace("open-", "segment-"))
                os.replace(path, closed)
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
        for model_dir in sorted(p for p in self.dir.iterdir() if p.is_dir()):
            closed = sorted(model_dir.glob("segment-*.jsonl"))
            if not closed:
                continue
            try:
                self.commit(model_dir.name, closed)
            except NothingToCommit:  # committed before a crash kept us from renaming them
                pass
            except Exception as e:  # the store is down: keep the files, try again later
                self.commit_errors.append(f"{model_dir.name}: {type(e).__name__}: {e}")
                failed = True
                continue
            for p in closed:
                p.rename(p.with_suffix(".committed"))
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
            rows += sum(r["rows"] for r in map(orjson.loads, data.splitlines()) if r)
            day = p.name.removeprefix("segment-")[:8]
            store.put("main", f"{PREFIX}{model}/{day}/{p.name}", data)
        store.commit(
            "main",
            f"prediction log: {len(paths)} segment(s), {rows} row(s) of {model}",
            {"rows": str(rows), "segments": str(len(paths))},
        )

    return commit
