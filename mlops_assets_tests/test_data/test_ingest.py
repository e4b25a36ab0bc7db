"""Write-audit-publish: a bad batch never reaches main, and the error names file/column/rule."""

import datetime as dt

import pytest

from mlops_assets.demo.simulator import inject_fault, simulate_batch, to_csv_bytes
from mlops_assets.ingest import ingest_batch
from mlops_assets_tests.conftest import DAY0

# fault -> (rule, whether the violation names a column)
EXPECTED = {
    "missing_column": ("missing_column", True),
    "wrong_dtype": ("dtype", True),
    "nulls": ("nulls", True),
    "out_of_range": ("range", True),
    "unknown_category": ("allowed_values", True),
    "duplicate_keys": ("duplicate_keys", True),
    "empty_file": ("empty_file", False),
    "not_utf8": ("encoding", False),
}


def test_good_batch_is_published_and_its_branch_removed(seeded, spec):
    store, head = seeded
    df = simulate_batch(spec.simulator, DAY0 + dt.timedelta(days=10), rows=50)
    result = ingest_batch(store, spec, to_csv_bytes(df), "day-new")
    assert result.published
    assert store.head("main") == result.main_commit != head
    merge = store.get_commit("main")
    assert merge.metadata["audit"] == "passed"
    assert merge.metadata["ingest_commit"] == result.ingest_commit
    assert result.ingest_commit in merge.parents
    assert set(store.list_branches()) == {"main"}
    assert "batches/day-new.csv" in store.list("main")


@pytest.mark.parametrize("fault", sorted(EXPECTED))
def test_bad_batch_stays_on_its_branch_and_main_is_unchanged(seeded, spec, fault):
    store, head = seeded
    df = simulate_batch(spec.simulator, DAY0 + dt.timedelta(days=10), rows=50)
    data = inject_fault(df, fault, spec.dataset.key, spec.target)
    result = ingest_batch(store, spec, data, f"bad-{fault}")
    assert not result.published
    assert store.head("main") == head
    assert "batches/bad-" + fault + ".csv" not in store.list("main")
    # The batch is kept for inspection on its ingest branch, committed.
    assert store.list_branches()[result.branch] == result.ingest_commit
    assert store.get(result.ingest_commit, result.path) == data
    rule, names_column = EXPECTED[fault]
    hits = [v for v in result.violations if v.rule == rule]
    assert hits, result.summary()
    text = str(hits[0])
    assert f"file '{result.path}'" in text and f"rule '{rule}'" in text
    if names_column:
        assert hits[0].column in spec.dataset.columns
        assert f"column '{hits[0].column}'" in text


def test_keys_already_on_main_are_rejected(seeded, spec):
    store, head = seeded
    df = simulate_batch(spec.simulator, DAY0, rows=120)  # the same rows as day 0
    result = ingest_batch(store, spec, to_csv_bytes(df), "replayed-day")
    assert not result.published
    assert any("already exist on main" in v.detail for v in result.violations)
    assert store.head("main") == head


def test_same_batch_name_twice_is_refused(seeded, spec):
    store, _ = seeded
    with pytest.raises(FileExistsError, match="already on main"):
        ingest_batch(store, spec, b"x", f"day-{DAY0}")
