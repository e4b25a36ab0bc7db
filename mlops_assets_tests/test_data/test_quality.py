import pandas as pd
import pytest

from mlops_assets.quality import load_dataset, parse_batch
from mlops_assets.specs.model import get_spec


@pytest.fixture
def ds():
    return get_spec("churn").dataset


HEADER = (
    "customer_id,snapshot_date,tenure_months,monthly_charges,support_tickets,"
    "usage_hours,plan,region,churned\n"
)


def test_clean_file_parses_to_spec_dtypes(ds):
    raw = (HEADER + "C1,2026-11-01,12,50.5,1,,basic,north,0\n").encode()
    df, problems = parse_batch("f.csv", raw, ds)
    assert problems == []
    assert df["tenure_months"].dtype == "Int64"
    assert df["snapshot_date"].dtype.kind == "M"
    assert pd.isna(df.loc[0, "usage_hours"])  # nullable column, empty cell


def test_fractional_int_and_bad_date_are_dtype_errors(ds):
    raw = (HEADER + "C1,2026-13-01,1.5,50,1,3,basic,north,0\n").encode()
    _, problems = parse_batch("f.csv", raw, ds)
    assert {(p.column, p.rule) for p in problems} == {
        ("snapshot_date", "dtype"),
        ("tenure_months", "dtype"),
    }


def test_unexpected_column_is_reported(ds):
    raw = (HEADER.strip() + ",extra\n" + "C1,2026-11-01,1,50,1,3,basic,north,0,x\n").encode()
    _, problems = parse_batch("f.csv", raw, ds)
    assert [(p.column, p.rule) for p in problems] == [("extra", "unexpected_column")]


def test_header_only_file_is_empty(ds):
    _, problems = parse_batch("f.csv", HEADER.encode(), ds)
    assert [p.rule for p in problems] == ["empty_file"]


def test_dataset_row_count_and_cross_file_duplicates(ds):
    row = "C1,2026-11-01,1,50,1,3,basic,north,0\n"
    files = {"a.csv": (HEADER + row).encode(), "b.csv": (HEADER + row).encode()}
    df, problems = load_dataset(files, ds)
    assert len(df) == 2
    rules = {p.rule: p for p in problems}
    assert "row_count" in rules and "min_rows=200" in rules["row_count"].detail
    assert rules["duplicate_keys"].file == "a.csv, b.csv"


def test_ragged_rows_are_reported_with_their_line(ds):
    raw = (HEADER + "C1,2026-11-01,1,50,1,3,basic,north,0,\n").encode()
    df, problems = parse_batch("f.csv", raw, ds)
    assert df is None
    assert [p.rule for p in problems] == ["unparseable"]
    assert "line 2 has 10 field(s) but the header has 9" in problems[0].detail


def test_integer_beyond_int64_is_a_dtype_error(ds):
    raw = (HEADER + "C1,2026-11-01,99999999999999999999,50,1,3,basic,north,0\n").encode()
    _, problems = parse_batch("f.csv", raw, ds)
    assert [(p.column, p.rule) for p in problems] == [("tenure_months", "dtype")]
