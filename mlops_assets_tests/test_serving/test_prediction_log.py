"""Every served row reaches the versioned store, even when the server is stopped by SIGTERM."""

import os
import signal

import httpx

from mlops_assets.serving.predlog import (
    PredictionLog,
    predictions_repository,
    read_rows,
    store_committer,
)
from mlops_assets.specs.model import get_spec
from mlops_assets.store.local import LocalStore
from mlops_assets_tests.test_serving.conftest import start_server


def _rows(store, model: str) -> list[dict]:
    out = []
    for path in store.list("main", f"predictions/{model}/"):
        out += read_rows(store.get("main", path))
    return out


def test_sigterm_flushes_and_commits_every_served_row(registry, tmp_path):
    data_dir = registry.data_dir
    spec = get_spec("churn", registry.specs_dir)
    store = LocalStore(data_dir / "lakefs-local", predictions_repository(spec.dataset.repository))
    proc, url = start_server(registry, tmp_path / "serve.log", MLOPS_DATA_DIR=str(data_dir))
    ids, rows_sent = set(), 0
    try:
        with httpx.Client(base_url=url) as http:
            for i in range(40):
                batch = registry.holdout["churn"][i : i + 1 + i % 3]
                r = http.post("/predict", json={"model": "churn", "records": batch})
                assert r.status_code == 200
                ids.add(r.json()["request_id"])
                rows_sent += len(batch)
        os.killpg(proc.pid, signal.SIGTERM)  # segments are far from full: only shutdown flushes
        # uvicorn shuts down gracefully, then re-raises SIGTERM: the conventional exit status
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    mine = [r for r in _rows(store, "churn") if r["request_id"] in ids]
    assert len(mine) == rows_sent
    assert {r["request_id"] for r in mine} == ids
    row = mine[0]
    assert set(row["inputs"]) == set(spec.features)
    assert {"prediction", "probability", "model_version", "timestamp"} <= set(row)
    head = store.get_commit("main")
    assert head.message.startswith("prediction log:")


def test_the_log_keeps_segments_the_store_refused_and_commits_them_later(tmp_path):
    attempts = []

    def flaky(model, paths):
        attempts.append(len(paths))
        if len(attempts) == 1:
            raise OSError("store unreachable")
        store = LocalStore(tmp_path / "store", "p")
        store_committer(lambda _: store, {"m": "p"})(model, paths)

    log = PredictionLog(tmp_path / "log", commit=flaky, segment_rows=2)
    for i in range(5):
        log.append("m", "1", f"r{i}", {"x": [i]}, {"prediction": [i * 10]})
    log.close()
    assert log.commit_errors and "store unreachable" in log.commit_errors[0]
    store = LocalStore(tmp_path / "store", "p")
    assert sorted(r["request_id"] for r in _rows(store, "m")) == [f"r{i}" for i in range(5)]
    assert not list((tmp_path / "log" / "m").glob("segment-*.jsonl"))  # all committed


def test_a_record_that_cannot_be_written_does_not_stop_the_log(tmp_path):
    log = PredictionLog(tmp_path / "log", commit=None, segment_rows=1000)
    log.append("m", "1", "bad", {"x": [object()]}, {"prediction": [1]})
    log.append("m", "1", "good", {"x": [2.0]}, {"prediction": [3]})
    log.close()
    assert log.write_errors and "request bad" in log.write_errors[0]
    (segment,) = (tmp_path / "log" / "m").glob("segment-*.jsonl")
    assert [r["request_id"] for r in read_rows(segment.read_bytes())] == ["good"]


def test_segments_left_open_by_a_crash_are_recovered_and_committed(tmp_path):
    folder = tmp_path / "log" / "m"
    folder.mkdir(parents=True)
    good = b'{"timestamp":"t","request_id":"r1","model":"m","model_version":"1","rows":1,'
    good += b'"inputs":{"x":[1.0]},"prediction":[0]}\n'
    (folder / "open-20261127T000000000000.jsonl").write_bytes(good + b'{"timestamp":"t","req')
    store = LocalStore(tmp_path / "store", "p")
    log = PredictionLog(tmp_path / "log", commit=store_committer(lambda _: store, {"m": "p"}))
    log.close()
    assert [r["request_id"] for r in _rows(store, "m")] == ["r1"]  # the torn line is dropped
