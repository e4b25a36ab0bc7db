"""The prediction log never loses an acknowledged row: a row is on disk before its answer,
``kill -9`` under load loses none, and a line that cannot be parsed is quarantined instead of
blocking later commits."""

import asyncio
import os
import re
import signal
import threading

import httpx
import pytest

from mlops_assets.serving.predlog import (
    QUARANTINE,
    LogError,
    PredictionLog,
    predictions_repository,
    read_rows,
    store_committer,
)
from mlops_assets.specs.model import get_spec
from mlops_assets.store import NotFound
from mlops_assets.store.local import LocalStore
from mlops_assets_tests.processes import stop, wait_until
from mlops_assets_tests.test_serving.conftest import start_server


def _rows(store, model: str) -> list[dict]:
    out = []
    for path in store.list("main", f"predictions/{model}/"):
        out += read_rows(store.get("main", path))
    return out


def test_write_returns_only_once_the_row_is_on_disk(tmp_path):
    log = PredictionLog(tmp_path / "log", commit=None, segment_rows=1000, segment_seconds=3600)

    async def serve_three():
        await asyncio.gather(
            *(
                log.write("m", "1", f"r{i}", {"x": [float(i)]}, {"prediction": [i]})
                for i in range(3)
            )
        )
        # read back before anything is closed: what was acknowledged is in the open segment
        (segment,) = (tmp_path / "log" / "m").glob("open-*.jsonl")
        return [r["request_id"] for r in read_rows(segment.read_bytes())]

    try:
        assert sorted(asyncio.run(serve_three())) == ["r0", "r1", "r2"]
        assert log.rows_written["m"] == 3
        assert 1 <= log.syncs <= 3  # group commit: one sync may cover several requests
    finally:
        log.close()


def test_a_row_that_cannot_be_written_is_never_acknowledged(tmp_path):
    log = PredictionLog(tmp_path / "log", commit=None)

    async def write(columns):
        await log.write("m", "1", "req", columns, {"prediction": [1]})

    try:
        with pytest.raises(LogError, match="could not write request req"):
            asyncio.run(write({"x": [object()]}))
        asyncio.run(write({"x": [1.0]}))  # and the log goes on
        counters = log.counters()
        assert counters["mlops_prediction_log_write_errors_total"][3] == {(): 1}
        assert counters["mlops_prediction_log_rows_written_total"][3] == {("m",): 1}
    finally:
        log.close()


GOOD = (
    b'{"timestamp":"t","request_id":"%s","model":"m","model_version":"1","rows":1,'
    b'"inputs":{"x":[1.0]},"prediction":[0]}\n'
)


def test_a_line_that_cannot_be_parsed_is_quarantined_and_never_blocks_commits(tmp_path):
    folder = tmp_path / "log" / "m"
    folder.mkdir(parents=True)
    corrupt = GOOD % b"a1" + b'{"timestamp": "t", "requ\x00\xff garbage\n' + GOOD % b"a2"
    (folder / "segment-20261127T000000000000.jsonl").write_bytes(corrupt)
    (folder / "segment-20261127T000001000000.jsonl").write_bytes(GOOD % b"b1")
    store = LocalStore(tmp_path / "store", "p")
    log = PredictionLog(tmp_path / "log", commit=store_committer(lambda _: store, {"m": "p"}))
    log.append("m", "1", "later", {"x": [2.0]}, {"prediction": [1]})
    log.close()
    assert sorted(r["request_id"] for r in _rows(store, "m")) == ["a1", "a2", "b1", "later"]
    (bad,) = (tmp_path / "log" / QUARANTINE / "m").glob("*.bad")
    assert b"garbage" in bad.read_bytes()
    counters = log.counters()
    assert counters["mlops_prediction_log_quarantined_lines_total"][3] == {("m",): 1}
    assert counters["mlops_prediction_log_rows_committed_total"][3] == {("m",): 4}
    assert not list(folder.glob("segment-*.jsonl"))  # every segment committed


def _metric(text: str, name: str, model: str | None = None) -> float:
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}(\{{.*\}})? (\S+)$", line)
        if m and (model is None or f'model="{model}"' in (m.group(1) or "")):
            total += float(m.group(2))
    return total


def test_kill_9_under_load_loses_no_acknowledged_row(registry, tmp_path):
    data_dir = tmp_path / "data"
    env = {"MLOPS_DATA_DIR": str(data_dir)}
    spec = get_spec("churn", registry.specs_dir)
    repo = predictions_repository(spec.dataset.repository)
    proc, url = start_server(registry, tmp_path / "serve-1.log", **env)
    acked: dict[str, int] = {}  # request id -> rows, every request answered 200
    lock = threading.Lock()
    stop_sending = threading.Event()
    holdout = registry.holdout["churn"]

    def send(offset: int):
        i = offset
        with httpx.Client(base_url=url, timeout=10) as http:
            while not stop_sending.is_set():
                rows = holdout[i % 50 : i % 50 + 1 + i % 3]
                i += 7
                try:
                    r = http.post("/predict", json={"model": "churn", "records": rows})
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    with lock:
                        acked[r.json()["request_id"]] = len(rows)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    try:
        wait_until("acknowledged traffic", lambda: len(acked) >= 300, 120, proc, tmp_path / "x")
        before = httpx.get(f"{url}/metrics").text
        os.killpg(proc.pid, signal.SIGKILL)  # in the middle of the load
        proc.wait(30)
    finally:
        stop_sending.set()
        for t in threads:
            t.join(30)
        stop(proc)
    assert _metric(before, "mlops_prediction_log_rows_written_total", "churn") > 0
    assert _metric(before, "mlops_prediction_log_syncs_total") > 0
    log_dir = data_dir / "serving" / "prediction-log" / "churn"
    assert list(log_dir.glob("open-*.jsonl"))  # nothing was closed or committed: kill -9

    # the restarted server recovers the open segments and commits them by itself
    proc, url = start_server(registry, tmp_path / "serve-2.log", **env)
    try:
        store = LocalStore(data_dir / "lakefs-local", repo)

        def committed() -> bool:
            try:
                return bool(store.list("main", "predictions/churn/"))
            except NotFound:  # no commit yet
                return False

        wait_until("recovered segments committed", committed, 60, proc, tmp_path / "serve-2.log")
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        stop(proc)
    logged: dict[str, int] = {}
    for row in _rows(store, "churn"):
        logged[row["request_id"]] = logged.get(row["request_id"], 0) + 1
    missing = set(acked) - set(logged)
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged requests lost"
    assert all(logged[r] == n for r, n in acked.items())
    assert _metric(metrics, "mlops_prediction_log_commits_total", "churn") >= 1
