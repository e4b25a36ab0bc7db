"""Prediction-log upkeep: compaction into Parquet per model and day, and the retention of raw
segments, each a commit; windows read the result and are the same as before it.

Segments are made in the log's own format and committed by its own committer, with timestamps
chosen by the test (the dates never come from the calendar); the concurrency test runs the real
prediction log, whose rows carry the real time, and acts for a day far after any of them."""

import asyncio
import datetime as dt
import io
import threading
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import orjson
import pandas as pd
import pytest

from mlops_assets.defs.keys import (
    drift_report_key,
    prediction_log_upkeep_key,
    production_performance_key,
)
from mlops_assets.defs.monitoring.upkeep import build_upkeep_assets, build_upkeep_schedule
from mlops_assets.defs.resources import DataStoreResource
from mlops_assets.monitoring.labels import commit_labels, labels_repository
from mlops_assets.monitoring.upkeep import (
    UpkeepError,
    day_paths,
    decode_day,
    encode_day,
    logged_rows,
    read_index,
    upkeep,
)
from mlops_assets.monitoring.windows import current_window, labelled_window, served_rows
from mlops_assets.serving.predlog import PREFIX, PredictionLog, read_rows, store_committer
from mlops_assets.settings import Settings, SettingsError
from mlops_assets.specs.model import get_spec
from mlops_assets.store import VersionedStore, open_store
from mlops_assets.store.local import LocalStore
from mlops_assets_tests.fakes.lakefs_server import ACCESS_KEY, SECRET_KEY, FakeLakeFS
from mlops_assets_tests.test_monitoring.conftest import champion, serve_rows

SPEC = get_spec("churn")
UTC = dt.UTC
TODAY = dt.date(2026, 11, 21)


def _at(day: int, hh: int, mm: int, ss: float = 0.0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hh, mm, tzinfo=UTC) + dt.timedelta(seconds=ss)


def _line(
    when: dt.datetime, request_id: str, version: str, n: int, inputs=None, outputs=None, **extra
) -> bytes:
    """One logged request, as PredictionLog._write writes it."""
    record = {
        "timestamp": when.isoformat(timespec="milliseconds"),
        "request_id": request_id,
        "model": SPEC.name,
        "model_version": version,
        "rows": n,
        "inputs": inputs
        or {
            "tenure_months": [3, 3.5, 4, 4.5][:n],  # ints and floats in one column
            "monthly_charges": [80.0] * n,
            "support_tickets": [2] * n,
            "usage_hours": [None] * n,
            "plan": ["basic"] * n,
            "region": ["north"] * n,
        },
        **(
            outputs
            or {
                "prediction": [i % 2 for i in range(n)],
                "probability": [0.25 + i / 100 for i in range(n)],
            }
        ),
        **extra,
    }
    return orjson.dumps(record) + b"\n"


def _commit_segment(store: VersionedStore, folder: Path, opened: dt.datetime, lines: list[bytes]):
    """A closed segment named as the log names it, committed by the log's committer."""
    path = folder / SPEC.name / f"segment-{opened:%Y%m%dT%H%M%S%f}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    store_committer(lambda _: store, {SPEC.name: store.repository})(SPEC.name, [path])
    return f"{PREFIX}{SPEC.name}/{opened:%Y%m%d}/{path.name}"


def _seed(tmp_path, store: VersionedStore | None = None) -> tuple[VersionedStore, dict[str, str]]:
    """Five segments over four days, as a server would have committed them."""
    store = store or LocalStore(tmp_path / "store", labels_repository(SPEC))
    folder = tmp_path / "log"
    seg = {
        "a": _commit_segment(
            store,
            folder,
            _at(18, 10, 0),
            [_line(_at(18, 10, 0, 1), "a1", "1", 3), _line(_at(18, 10, 0, 2), "a2", "2", 2)],
        ),
        "b": _commit_segment(
            store,
            folder,
            _at(19, 12, 0),
            [
                _line(_at(19, 12, 0, 1), "b1", "1", 2),
                _line(_at(19, 12, 0, 2), "b2", "1", 2, synthetic="replay"),
            ],
        ),
        # spans midnight: its newest row is of the 20th, so it belongs to the 20th
        "c": _commit_segment(
            store,
            folder,
            _at(19, 23, 59, 50),
            [_line(_at(19, 23, 59, 55), "c1", "1", 1), _line(_at(20, 0, 0, 5), "c2", "1", 2)],
        ),
        # named after the 21st (the file opened after midnight), its rows are of the 20th
        "d": _commit_segment(
            store,
            folder,
            _at(21, 0, 0, 0.002),
            [
                _line(_at(20, 23, 59, 59.999), "d1", "1", 2),
                # another schema: fewer inputs, no probability
                _line(
                    _at(20, 23, 59, 59.999),
                    "d2",
                    "1",
                    1,
                    inputs={"tenure_months": [7.5], "plan": ["pro"]},
                    outputs={"prediction": [1]},
                ),
            ],
        ),
        "e": _commit_segment(store, folder, _at(21, 1, 0), [_line(_at(21, 1, 0, 1), "e1", "1", 2)]),
    }
    commit_labels(
        store,
        SPEC,
        [
            {"request_id": "a1", "row": 2, "label": 0},
            {"request_id": "c2", "row": 0, "label": 1},
            {"request_id": "d1", "row": 1, "label": 1},
            {"request_id": "e1", "row": 0, "label": 0},
        ],
    )
    return store, seg


def _views(store: VersionedStore) -> dict:
    head = store.head("main")
    return {
        "rows": list(logged_rows(store, SPEC.name, head)),
        "served": list(served_rows(store, SPEC, "1")),
        "current": current_window(store, SPEC, "1", 100),
        "current_small": current_window(store, SPEC, "1", 4),
        "labelled": labelled_window(store, SPEC, "1", 100),
    }


def _assert_same(before: dict, after: dict) -> None:
    assert after["rows"] == before["rows"]
    assert after["served"] == before["served"]
    for name in ("current", "current_small", "labelled"):
        pd.testing.assert_frame_equal(after[name], before[name], check_exact=True)


def test_compaction_writes_a_parquet_per_day_and_windows_do_not_change(tmp_path):
    store, seg = _seed(tmp_path)
    before = _views(store)
    assert len(before["rows"]) == 17 and len(before["labelled"]) == 4
    base = store.head("main")

    result = upkeep(store, SPEC.name, TODAY, retention_days=30)

    # the 18th, 19th and 20th are compacted; the 21st (today) waits
    assert result.days == ["2026-11-18", "2026-11-19", "2026-11-20"]
    assert result.compacted_segments == 4 and result.waiting_segments == 1
    assert result.compacted_rows == 15  # every row of a, b, c, d
    assert result.expired_segments == 0 and result.retention_commit is None
    assert result.base_commit == base
    assert store.head("main") == result.merge_commit
    # every raw segment is still there (30 days of retention)
    assert set(seg.values()) <= set(store.list("main", PREFIX))
    # each day file holds exactly the rows of its segments, and queries as a table
    by_day = {"2026-11-18": ["a"], "2026-11-19": ["b"], "2026-11-20": ["c", "d"]}
    for day, names in by_day.items():
        parquet, _ = day_paths(SPEC.name, dt.date.fromisoformat(day))
        data = store.get("main", parquet)
        expected = {seg[n]: read_rows(store.get(base, seg[n])) for n in names}
        assert decode_day(data) == expected
        table = pd.read_parquet(io.BytesIO(data))
        assert len(table) == sum(map(len, expected.values()))
        assert (table["time"].dt.date.astype(str) <= day).all()
    index = read_index(store, "main", SPEC.name)
    assert {s: e.day.isoformat() for s, e in index.items()} == {
        seg["a"]: "2026-11-18",
        seg["b"]: "2026-11-19",
        seg["c"]: "2026-11-20",
        seg["d"]: "2026-11-20",  # by its rows, not by the name it got after midnight
    }
    # the compaction is a commit of its own, reachable from main, with what it did
    compaction = store.get_commit(result.compaction_commit)
    assert compaction.metadata["rows"] == "15" and compaction.metadata["segments"] == "4"
    assert result.compaction_commit in store.get_commit("main").parents
    assert result.raw_bytes > 0 and result.parquet_bytes_after > 0
    # the windows read the day files now, and give the same answer
    _assert_same(before, _views(store))


def test_retention_deletes_compacted_raw_segments_in_a_commit_history_keeps(tmp_path):
    store, seg = _seed(tmp_path)
    before = _views(store)
    base = store.head("main")

    result = upkeep(store, SPEC.name, TODAY, retention_days=1)

    # raw segments of days before the 20th go; the 20th's and today's (not compacted) stay
    assert result.expired_segments == 2 and result.expired_rows == 9
    raw = set(store.list("main", PREFIX))
    assert raw == {seg["c"], seg["d"], seg["e"]}
    removed = {c.path for c in store.diff(base, "main") if c.type == "removed"}
    assert removed == {seg["a"], seg["b"]}
    retention = store.get_commit(result.retention_commit)
    assert retention.metadata["segments"] == "2" and retention.parents == (
        result.compaction_commit,
    )
    # nothing disappears without a trace: the deleted segments are in the history
    assert read_rows(store.get(result.compaction_commit, seg["a"]))[0]["request_id"] == "a1"
    _assert_same(before, _views(store))

    # a second run for the same day has nothing to do: no commit
    again = upkeep(store, SPEC.name, TODAY, retention_days=1)
    assert again.compaction_commit is again.retention_commit is again.merge_commit is None
    assert store.head("main") == result.merge_commit
    assert store.list_branches().keys() == {"main"}  # and no branch left behind

    # a day later, with 0 days of retention, every compacted raw segment goes; today's stays
    later = upkeep(store, SPEC.name, TODAY + dt.timedelta(days=1), retention_days=0)
    assert later.days == ["2026-11-21"] and later.expired_segments == 3
    assert store.list("main", PREFIX) == []
    assert [r["request_id"] for r in logged_rows(store, SPEC.name, "main")][:1] == ["e1"]
    _assert_same(before, _views(store))


def test_a_late_segment_is_added_to_its_compacted_day(tmp_path):
    store, seg = _seed(tmp_path)
    upkeep(store, SPEC.name, TODAY, retention_days=30)
    # a server that could not reach the store commits a segment of the 19th two days late
    late = _commit_segment(
        store, tmp_path / "log", _at(19, 15, 0), [_line(_at(19, 15, 0, 1), "late", "1", 4)]
    )
    before = _views(store)

    result = upkeep(store, SPEC.name, TODAY, retention_days=30)

    assert result.days == ["2026-11-19"] and result.compacted_rows == 4
    assert result.parquet_bytes_before > 0  # the day file was rewritten with it
    parquet, index_path = day_paths(SPEC.name, dt.date(2026, 11, 19))
    assert set(decode_day(store.get("main", parquet))) == {seg["b"], late}
    assert orjson.loads(store.get("main", index_path))["rows"] == 8
    keys = Counter((r["request_id"], r["row"]) for r in logged_rows(store, SPEC.name, "main"))
    assert len(keys) == 21 and set(keys.values()) == {1}  # every row, once
    _assert_same(before, _views(store))


def test_the_upkeep_works_the_same_through_the_lakefs_adapter(tmp_path):
    """Branch, commits, deletes and merge over the lakeFS REST API (the fake speaks it with
    the SDK's own models; a live server runs the store contract when one is configured)."""
    with FakeLakeFS(tmp_path / "fake-lakefs") as fake:
        lakefs = open_store(
            "lakefs",
            labels_repository(SPEC),
            endpoint=fake.url,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            storage_namespace="local://predictions",
        )
        lakefs.ensure_repository()
        store, seg = _seed(tmp_path, lakefs)
        before = _views(store)

        result = upkeep(store, SPEC.name, TODAY, retention_days=1)

        assert result.compacted_rows == 15 and result.expired_segments == 2
        assert store.head("main") == result.merge_commit
        assert set(store.list("main", PREFIX)) == {seg["c"], seg["d"], seg["e"]}
        assert store.list_branches().keys() == {"main"}  # the upkeep's branch is gone
        _assert_same(before, _views(store))


def test_the_merge_waits_while_main_has_staged_changes(tmp_path):
    """The log's committer and the labels put, then commit, on main: a merge meeting their
    staged files is refused by the store, so the upkeep tries again until they are committed,
    and never takes them into its own commit."""
    store, _ = _seed(tmp_path)
    base = store.head("main")
    store.put("main", "labels/churn/staged.jsonl", b'{"request_id": "a1", "row": 0, "label": 1}\n')
    results = []
    worker = threading.Thread(
        target=lambda: results.append(
            upkeep(
                LocalStore(tmp_path / "store", store.repository),
                SPEC.name,
                TODAY,
                merge_attempts=500,
                retry_seconds=0.02,
            )
        )
    )
    worker.start()
    # the upkeep has committed on its branch and is waiting to merge
    _wait_for(lambda: any(b != "main" and c != base for b, c in store.list_branches().items()))
    assert store.head("main") == base
    labels = store.commit("main", "labels: 1 row(s) of churn").id
    worker.join(timeout=60)
    (result,) = results
    assert result.merge_commit == store.head("main")
    assert store.get_commit(result.merge_commit).parents == (labels, result.compaction_commit)
    assert "labels/churn/staged.jsonl" not in {c.path for c in store.diff(labels, "main")}


def test_an_upkeep_that_meets_a_conflicting_change_fails_and_changes_nothing(tmp_path):
    """Another writer changed a day file on main meanwhile (an upkeep run at the same time):
    the merge conflicts, the run fails saying so, and main keeps the other writer's version."""
    store, _ = _seed(tmp_path)
    base = store.head("main")
    parquet, _ = day_paths(SPEC.name, dt.date(2026, 11, 18))
    store.put("main", parquet, b"the other upkeep's file")  # staged: the merge waits
    errors = []

    def run():
        try:
            other_store = LocalStore(tmp_path / "store", store.repository)
            upkeep(other_store, SPEC.name, TODAY, merge_attempts=500, retry_seconds=0.02)
        except UpkeepError as e:
            errors.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    _wait_for(lambda: any(b != "main" and c != base for b, c in store.list_branches().items()))
    other = store.commit("main", "another upkeep").id
    worker.join(timeout=60)
    (error,) = errors
    assert "conflicts with a change merged meanwhile" in str(error) and parquet in str(error)
    assert "run the upkeep again" in str(error)
    assert store.head("main") == other and store.get("main", parquet) == b"the other upkeep's file"
    assert store.list_branches().keys() == {"main"}


class CountingStore(LocalStore):
    """The real local store, recording which objects are read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.reads: list[str] = []

    def get(self, ref: str, path: str) -> bytes:
        self.reads.append(path)
        return super().get(ref, path)


def test_a_window_reads_only_the_recent_history_and_keeps_the_order_of_the_raw_log(tmp_path):
    store = LocalStore(tmp_path / "store", labels_repository(SPEC))
    folder = tmp_path / "log"
    for day in range(1, 11):
        _commit_segment(
            store, folder, _at(day, 12, 0), [_line(_at(day, 12, 0, 1), f"r{day}", "1", 2)]
        )
    # around one midnight: a segment named after the 6th holding rows of the 5th, and one
    # named after the 5th whose newest row is of the 6th
    _commit_segment(
        store, folder, _at(6, 0, 0, 0.001), [_line(_at(5, 23, 59, 59.999), "late-5", "1", 1)]
    )
    _commit_segment(
        store,
        folder,
        _at(5, 23, 59, 59),
        [_line(_at(5, 23, 59, 59.5), "x-5", "1", 1), _line(_at(6, 0, 0, 1), "x-6", "1", 1)],
    )
    before = list(logged_rows(store, SPEC.name, "main"))
    assert len(before) == 23

    partial = upkeep(store, SPEC.name, dt.date(2026, 11, 11), retention_days=3)
    assert partial.compacted_segments == 12 and partial.expired_segments == 9
    assert list(logged_rows(store, SPEC.name, "main")) == before  # day files and raw, mixed
    upkeep(store, SPEC.name, dt.date(2026, 11, 11), retention_days=0)
    assert store.list("main", PREFIX) == []
    assert list(logged_rows(store, SPEC.name, "main")) == before  # day files only

    # the newest row costs two day indexes and one day file, not the ten days of history
    counting = CountingStore(tmp_path / "store", labels_repository(SPEC))
    newest = next(iter(logged_rows(counting, SPEC.name, "main")))
    assert newest["request_id"] == "r10"
    assert sorted(counting.reads) == [
        "compacted/churn/2026-11-09.segments.json",
        "compacted/churn/2026-11-10.parquet",
        "compacted/churn/2026-11-10.segments.json",
    ]


def test_parquet_keeps_values_exactly_as_logged():
    rows = read_rows(
        _line(_at(18, 1, 0), "x", "1", 3)
        + _line(_at(18, 1, 1), "y", "1", 1, inputs={"plan": [["a", 1]], "support_tickets": [True]})
        # a multiclass answer: the class, and P(class) per class
        + _line(
            _at(18, 1, 2),
            "z",
            "1",
            1,
            outputs={"prediction": ["billing"], "probability": [{"billing": 0.7, "tech": 0.3}]},
        )
    )
    decoded = decode_day(encode_day({"s": rows}))["s"]
    assert decoded == rows
    kinds = [type(r["inputs"].get("tenure_months")) for r in decoded]
    assert kinds == [int, float, int, type(None), int]
    assert "tenure_months" not in decoded[3]["inputs"]  # a key the request lacked stays out
    assert decoded[3]["inputs"]["support_tickets"] is True  # not 1, beside the ints 2
    assert list(decoded[4]["probability"]) == ["billing", "tech"]
    with pytest.raises(UpkeepError, match="not a compacted prediction log"):
        decode_day(_plain_parquet(), "some.parquet")


def _plain_parquet() -> bytes:
    buf = io.BytesIO()
    pd.DataFrame({"a": [1]}).to_parquet(buf)
    return buf.getvalue()


def test_an_upkeep_refuses_a_negative_retention_and_skips_an_empty_log(tmp_path):
    store = LocalStore(tmp_path / "store", labels_repository(SPEC))
    with pytest.raises(UpkeepError, match="retention_days=-1"):
        upkeep(store, SPEC.name, TODAY, retention_days=-1)
    result = upkeep(store, SPEC.name, TODAY)  # no repository yet
    assert result.base_commit is None and result.describe() == "churn: nothing logged yet"


def test_no_acknowledged_row_is_lost_while_the_log_writes_and_the_upkeep_runs(tmp_path):
    """The real log writes (acknowledging each request once durable) and commits segments while
    upkeeps compact and expire them (0 days of retention) from another store object, until
    three upkeeps have done so. A segment still open is never compacted; at the end every
    acknowledged row is there exactly once."""
    store = LocalStore(tmp_path / "store", labels_repository(SPEC))
    log = PredictionLog(
        tmp_path / "log",
        commit=store_committer(lambda _: store, {SPEC.name: store.repository}),
        segment_rows=50,  # 25 requests of 2 rows: segments close by size only
        segment_seconds=3600,
    )
    far = dt.date(9999, 1, 1)  # every logged day is before it, whatever the clock says
    upkeeper = LocalStore(tmp_path / "store", labels_repository(SPEC))
    columns = {c: [1.0, 2.0] for c in SPEC.features}
    outputs = {"prediction": [0, 1], "probability": [0.1, 0.9]}
    acked: list[str] = []
    stop = threading.Event()

    async def produce(until) -> None:
        while not until():
            request_id = f"r{len(acked)}"
            await log.write(SPEC.name, "1", request_id, columns, outputs)
            acked.append(request_id)

    writer = threading.Thread(target=lambda: asyncio.run(produce(lambda: stop.is_set())))
    writer.start()
    results = []
    deadline = time.monotonic() + 120
    try:
        while sum(1 for r in results if r.compacted_segments) < 3:
            assert time.monotonic() < deadline, f"{len(results)} upkeeps found no segment"
            results.append(upkeep(upkeeper, SPEC.name, far, retention_days=0))
            time.sleep(0.01)
    finally:
        stop.set()
        writer.join(timeout=60)
    # whole segments only, then 7 requests more: an open segment, written and acknowledged
    asyncio.run(produce(lambda: len(acked) % 25 == 0))
    closed = len(acked) // 25
    _wait_for(lambda: log.rows_committed[SPEC.name] == 2 * len(acked))
    written = len(acked)
    asyncio.run(produce(lambda: len(acked) == written + 7))
    open_segments = list((tmp_path / "log" / SPEC.name).glob("open-*.jsonl"))
    assert len(open_segments) == 1

    result = upkeep(upkeeper, SPEC.name, far, retention_days=0)

    seen = [r["request_id"] for r in logged_rows(store, SPEC.name, "main")]
    assert Counter(seen) == Counter({a: 2 for a in acked[:written]})  # not the open one
    compacted = read_index(store, "main", SPEC.name)
    assert sum(e.rows for e in compacted.values()) == 2 * written
    assert store.list("main", PREFIX) == []  # all compacted, and expired with 0 days
    assert result.expired_segments + sum(r.expired_segments for r in results) == closed

    log.close()  # the open segment is closed and committed
    upkeep(upkeeper, SPEC.name, far, retention_days=0)
    seen_rows = Counter((r["request_id"], r["row"]) for r in logged_rows(store, SPEC.name, "main"))
    assert seen_rows == Counter({(a, row): 1 for a in acked for row in (0, 1)})
    assert store.list("main", PREFIX) == []


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_drift_and_live_performance_assets_judge_the_same_windows_after_the_upkeep(server_env):
    """The monitoring assets themselves (real MLflow server, Evidently, the gate's metric)
    before and after every raw segment was compacted and expired."""
    env = server_env
    spec = champion(env)
    drifted = serve_rows(env, spec, "covariate_shift", 400, request_id="req-a", seed=1)
    steady = serve_rows(env, spec, "none", 400, request_id="req-b", seed=2)
    store = LocalStore(env.data_dir / "lakefs-local", labels_repository(spec))
    labels = [
        {"request_id": request_id, "row": i, "label": int(v)}
        for request_id, frame in (("req-a", drifted), ("req-b", steady))
        for i, v in enumerate(frame[spec.target])
    ]
    commit_labels(store, spec, labels)
    keys = {
        "drift": drift_report_key(spec.name),
        "performance": production_performance_key(spec.name),
    }

    def monitored() -> dict:
        assert env.run(list(keys.values())).success
        return {
            name: {
                k: v.value
                for k, v in env.instance.get_latest_materialization_event(
                    key
                ).asset_materialization.metadata.items()
            }
            for name, key in keys.items()
        }

    before = monitored()
    result = upkeep(store, spec.name, dt.date(9999, 1, 1), retention_days=0)
    assert result.compacted_rows == 800 and store.list("main", PREFIX) == []
    after = monitored()

    assert before["drift"]["window_rows"] == 800 and before["performance"]["labelled_rows"] == 800
    same = {
        "drift": ("window_rows", "window_start", "window_end", "drift_share", "drifted_columns"),
        "performance": ("labelled_rows", "live_roc_auc", "window_start", "window_end"),
    }
    for name, fields in same.items():
        assert {f: after[name][f] for f in fields} == {f: before[name][f] for f in fields}


# ---- the Dagster asset and its schedule -----------------------------------------------------


def test_the_scheduled_asset_runs_for_its_tick_day_and_reports_what_it_did(tmp_path):
    store, _ = _seed(tmp_path)
    schedule = build_upkeep_schedule(SPEC)
    assert schedule.cron_schedule == "15 0 * * *" and schedule.execution_timezone == "UTC"
    tick = dt.datetime(2026, 11, 21, 0, 15, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        request = schedule.evaluate_tick(
            dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
        ).run_requests[0]
        assert request.run_key == "upkeep-churn-2026-11-21"
        (asset,) = build_upkeep_assets(SPEC, retention_days=1)
        resources = {"data_store": DataStoreResource(local_root=str(tmp_path / "store"))}
        run = dg.materialize(
            [asset], instance=instance, resources=resources, run_config=request.run_config
        )
        assert run.success
        key = prediction_log_upkeep_key(SPEC.name)
        (materialization,) = run.asset_materializations_for_node(key.to_python_identifier())
        meta = {k: v.value for k, v in materialization.metadata.items()}
        assert meta["today"] == "2026-11-21" and meta["retention_days"] == 1
        assert meta["segments_compacted"] == 4 and meta["rows_compacted"] == 15
        assert meta["segments_expired"] == 2 and meta["rows_expired"] == 9
        assert meta["bytes_before"] > 0 and meta["bytes_after"] > 0
        assert meta["commit_id"] == store.head("main")
        assert instance.get_latest_materialization_event(key) is not None

        # a config of its own overrides the settings' retention; a bad date fails, named
        run = dg.materialize(
            [asset],
            instance=instance,
            resources=resources,
            run_config={"ops": {key.to_python_identifier(): {"config": {"today": "21/11"}}}},
            raise_on_error=False,
        )
        assert not run.success
        failure = run.get_step_failure_events()[0].step_failure_data.error
        assert "today='21/11' is not a date" in failure.message


def test_retention_days_come_from_the_environment_once():
    assert Settings.from_env({}).log_retention_days == 30
    assert Settings.from_env({"MLOPS_LOG_RETENTION_DAYS": "7"}).log_retention_days == 7
    assert Settings.from_env({"MLOPS_LOG_RETENTION_DAYS": "0"}).log_retention_days == 0
    with pytest.raises(SettingsError, match="MLOPS_LOG_RETENTION_DAYS='-3'"):
        Settings.from_env({"MLOPS_LOG_RETENTION_DAYS": "-3"})
