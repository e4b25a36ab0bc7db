"""The audit trail as library code on the real local store: append-only, ordered, readable by
a new process (a new store object on the same folder), and it notices a move made elsewhere."""

import datetime as dt
import itertools

from mlops_assets.store.local import LocalStore
from mlops_assets.training.history import (
    FIRST_MODEL,
    MANUAL,
    PROMOTE,
    AuditTrail,
    Entry,
    audit_repository,
    production_drift,
)

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def clock():
    ticks = itertools.count()
    return lambda: T0 + dt.timedelta(minutes=next(ticks))


def test_entries_are_appended_in_commits_of_their_own_and_read_back_in_order(tmp_path):
    store = LocalStore(tmp_path, audit_repository("churn"))
    trail = AuditTrail(store, "churn-model", now=clock())
    first, c1 = trail.append(
        Entry("churn-model", FIRST_MODEL, None, "1", "new_data", "no champion yet", run_id="r1")
    )
    _promoted, c2 = trail.append(
        Entry(
            "churn-model", PROMOTE, "1", "2", "drift", "canary healthy", run_id="r2",
            evidence={"drift_share": 0.5, "canary": {"requests": 200, "error_rate": 0.0}},
        )
    )  # fmt: skip
    assert first.at == "2026-11-01T12:00:00.000000+00:00" and c1 != c2
    assert store.get_commit(c2).message == "promote churn-model: production 1 -> 2"

    again = AuditTrail(LocalStore(tmp_path, audit_repository("churn")), "churn-model")
    got = again.entries()
    assert [(e.action, e.from_version, e.to_version, e.run_id) for e in got] == [
        (FIRST_MODEL, None, "1", "r1"),
        (PROMOTE, "1", "2", "r2"),
    ]
    assert got[1].evidence["canary"]["requests"] == 200
    assert "promote     production v1 -> v2  [drift; run r2" in got[1].line()
    assert "drift_share=0.5" in got[1].evidence_line()
    assert again.append_only_problems() == []
    # another model's trail in the same repository is its own
    assert AuditTrail(store, "other").entries() == []


def test_a_rewritten_entry_is_reported_and_an_outside_move_is_noticed(tmp_path):
    store = LocalStore(tmp_path, "audit")
    trail = AuditTrail(store, "m", now=clock())
    trail.append(Entry("m", FIRST_MODEL, None, "1", "new_data", "first"))
    entries = trail.entries()
    assert production_drift(entries, "1") is None
    moved = production_drift(entries, "3")
    assert moved is not None and "production is v3" in moved and "left it at v1" in moved

    (path,) = store.list("main", "history/m/")
    store.put("main", path, Entry("m", MANUAL, None, "9", "cli", "rewritten").to_json())
    store.commit("main", "tamper")
    (problem,) = trail.append_only_problems()
    assert "'tamper'" in problem and "changed" in problem and path in problem
