"""``mlops init``: a spec from a sample of the user's CSV or Parquet, that ingests the same data
with no edits; what the sample cannot settle is an error naming the file and column."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_assets import cli
from mlops_assets.specs.infer import InferError, infer_spec, read_sample, verify
from mlops_assets.specs.model import load_spec_file


def frame(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    day = dt.date(2026, 11, 1)
    return pd.DataFrame(
        {
            "Order ID": [f"o-{i:05d}" for i in range(rows)],
            "placed_on": [str(day + dt.timedelta(days=i % 5)) for i in range(rows)],
            "basket value": rng.uniform(5, 250, rows).round(2),
            "items": rng.integers(1, 12, rows),
            "channel": rng.choice(["web", "app", "store"], rows),
            "note": [f"free text {i}" for i in range(rows)],  # > the category cap
            "discount": np.where(rng.random(rows) < 0.2, np.nan, rng.uniform(0, 30, rows)),
            "returned": rng.integers(0, 2, rows),
        }
    )


def infer(df: pd.DataFrame, target: str = "returned", **kw):
    text = df.copy()
    for c in text.columns:  # what a CSV round trip gives: text cells, empty for missing
        text[c] = [None if pd.isna(v) else str(v) for v in text[c]]
    return infer_spec("orders", text, target, "orders.csv", **kw)


def test_dtypes_nullability_ranges_categories_key_and_timestamp_are_inferred():
    got = infer(frame())
    spec = got.spec
    cols = spec["dataset"]["columns"]
    assert spec["task"] == "classification" and spec["target"] == "returned"
    assert spec["dataset"]["key"] == "Order ID" and spec["dataset"]["timestamp"] == "placed_on"
    assert cols["Order ID"] == {"dtype": "string"}
    assert cols["placed_on"] == {"dtype": "date"}
    assert cols["items"]["dtype"] == "int" and cols["items"]["min"] == 0  # 1 - 10% of 10, >= 0
    assert cols["items"]["max"] == 12  # 11 + 10% of the range 1..11
    assert cols["basket value"]["dtype"] == "float"
    assert cols["basket value"]["min"] < 5.1 and cols["basket value"]["max"] > 249
    assert cols["channel"] == {"dtype": "category", "allowed": ["app", "store", "web"]}
    assert cols["note"] == {"dtype": "string"}
    assert cols["discount"]["nullable"] is True and cols["discount"]["dtype"] == "float"
    assert cols["returned"] == {"dtype": "int", "allowed": [0, 1]}
    assert spec["features"] == ["basket value", "items", "channel", "discount"]
    assert spec["evaluation"] == {"metric": "roc_auc", "floor": 0.6, "tolerance": 0.03}
    checks = "\n".join(got.checks)
    assert "Left out of the features: free-text column(s) ['note']" in checks
    assert "Nullable in the sample (missing values allowed): ['discount']" in checks
    assert "roc_auc >= 0.6" in checks


@pytest.mark.parametrize(
    ("target", "values", "task", "metric"),
    [
        ("y", lambda r, n: r.choice(["a", "b", "c"], n), "multiclass", "roc_auc_ovr"),
        ("y", lambda r, n: r.choice(["yes", "no"], n), "classification", "roc_auc"),
        ("y", lambda r, n: r.normal(100, 20, n).round(3), "regression", "r2"),
        ("y", lambda r, n: r.integers(0, 500, n), "regression", "r2"),
    ],
)
def test_the_task_and_gate_metric_follow_the_target(target, values, task, metric):
    df = frame()
    df["y"] = values(np.random.default_rng(1), len(df))
    spec = infer(df.drop(columns=["returned"]), target).spec
    assert spec["task"] == task and spec["evaluation"]["metric"] == metric


def test_a_column_the_sample_cannot_settle_names_file_column_and_what_to_do():
    df = frame()
    df["items"] = df["items"].astype(object)
    df.loc[[3, 9], "items"] = "n/a"
    with pytest.raises(
        InferError,
        match=r"orders.csv: column 'items' is numeric in 99% of the sample but not in 2 row\(s\) "
        r"\(e.g. \['n/a', 'n/a'\]\).*--dtype 'items=string'",
    ):
        infer(df)
    spec = infer(df, dtypes={"items": "string"}).spec  # settled by the user
    assert spec["dataset"]["columns"]["items"]["dtype"] == "string"


def test_bad_inputs_are_errors_that_say_what_to_do():
    one_class = frame()
    one_class["returned"] = 1
    with pytest.raises(InferError, match=r"target 'returned'.*fits no task|one class"):
        infer(one_class)
    with pytest.raises(InferError, match=r"no column 'churn' to predict: the columns are"):
        infer(frame(), "churn")
    no_key = frame().drop(columns=["Order ID"])
    no_key["note"] = "same"
    with pytest.raises(InferError, match=r"no column is unique.*--key COLUMN"):
        infer(no_key)
    with pytest.raises(InferError, match=r"no YYYY-MM-DD date column.*--timestamp COLUMN"):
        infer(frame().drop(columns=["placed_on"]))
    empty = frame()
    empty["discount"] = np.nan
    with pytest.raises(InferError, match=r"column 'discount' is empty in the sample.*--dtype"):
        infer(empty)


def test_init_then_ingest_works_with_no_edits_for_csv_and_parquet(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("MLOPS_SPECS_DIR", str(tmp_path / "specs"))
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    df = frame(rows=400)
    df.to_csv(tmp_path / "orders.csv", index=False)
    df.assign(placed_on=pd.to_datetime(df["placed_on"])).to_parquet(tmp_path / "shop.parquet")

    assert (
        cli.main(["init", "orders", "--from", str(tmp_path / "orders.csv"), "--target", "returned"])
        == 0
    )
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'specs' / 'orders.yaml'}: task classification" in out
    assert "check before ingesting:" in out and "then: mlops ingest orders --file" in out
    spec = load_spec_file(tmp_path / "specs" / "orders.yaml")
    assert spec.dataset.columns["channel"].allowed == ("app", "store", "web")
    assert cli.main(["ingest", "orders", "--file", str(tmp_path / "orders.csv")]) == 0
    assert "published batches/orders.csv (400 rows)" in capsys.readouterr().out

    # Parquet, a second spec; a second init of the same name is refused without --force
    args = ["init", "shop", "--from", str(tmp_path / "shop.parquet"), "--target", "returned"]
    assert cli.main(args) == 0
    assert cli.main(args) == 1
    assert "shop.yaml exists: pass --force" in capsys.readouterr().err
    assert cli.main(["ingest", "shop", "--file", str(tmp_path / "shop.parquet")]) == 0
    assert "published batches/shop.csv (400 rows)" in capsys.readouterr().out
    text = (tmp_path / "specs" / "shop.yaml").read_text()
    assert yaml.safe_load(text)["dataset"]["columns"]["placed_on"] == {"dtype": "date"}


def test_a_sample_is_read_as_ingestion_reads_it_and_verified(tmp_path):
    df = frame(rows=500)
    df.to_csv(tmp_path / "orders.csv", index=False)
    sample, more = read_sample(tmp_path / "orders.csv", rows=200)
    assert len(sample) == 200 and more
    assert sample["items"].map(type).eq(str).all()  # text cells, as the audit reads them
    got = infer_spec("orders", sample, "returned", "orders.csv", more_rows=more)
    assert any("first 200 rows only" in c for c in got.checks)
    verify(got, sample, "orders.csv")  # the sample passes the rules inferred from it


@pytest.mark.parametrize(
    ("labels", "shares", "positive", "why"),
    [
        (["M", "B"], [0.3, 0.7], "M", "the minority class, 3"),  # ~30% of the sample
        (["yes", "no"], [0.8, 0.2], "yes", "'yes' against 'no'"),  # by name, though the majority
        (["True", "False"], [0.5, 0.5], "True", "'True' against 'False'"),
        ([1, 2], [0.6, 0.4], 2, "the minority class"),
        (["up", "down"], [0.5, 0.5], "up", "the classes are even: the second in sorted order"),
    ],
)
def test_a_binary_target_with_labels_gets_a_positive_class(labels, shares, positive, why):
    df = frame(rows=300)
    rng = np.random.default_rng(2)
    if shares == [0.5, 0.5]:  # exactly even
        df["returned"] = [labels[i % 2] for i in range(len(df))]
    else:
        df["returned"] = rng.choice(labels, len(df), p=shares)
    got = infer(df)
    spec = got.spec
    assert spec["task"] == "classification" and spec["evaluation"]["metric"] == "roc_auc"
    assert spec["positive_class"] == positive
    column = spec["dataset"]["columns"]["returned"]
    assert column["allowed"] == sorted(labels, key=str)
    assert column["dtype"] == ("int" if isinstance(positive, int) else "category")
    other = next(c for c in labels if c != positive)
    check = next(c for c in got.checks if c.startswith("Target 'returned' has the labels"))
    assert f"positive class {positive!r} ({why}" in check
    assert f"set positive_class: {other!r}" in check
    text = df.copy()
    for c in text.columns:
        text[c] = [None if pd.isna(v) else str(v) for v in text[c]]
    verify(got, text, "orders.csv")  # a valid spec, and the sample passes it


def test_a_binary_target_under_task_multiclass_stays_multiclass():
    df = frame()
    df["returned"] = np.random.default_rng(3).choice(["yes", "no"], len(df))
    spec = infer(df, task="multiclass").spec
    assert spec["task"] == "multiclass" and "positive_class" not in spec
    assert spec["evaluation"]["metric"] == "f1_macro"
