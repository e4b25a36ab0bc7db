"""``mlops init``: a model spec written from a sample of the user's own CSV or Parquet data.

Every rule is inferred from what the sample holds, read exactly as ingestion will read the
file (text cells, typed by the spec): dtypes, nullability, numeric ranges widened by a margin,
categories up to a cap, the key and the timestamp, the task from the target, and a gate
metric with a floor just above what a model with no skill scores. The spec is validated, and
the sample is audited against it before the file is written: ``mlops ingest NAME --file FILE``
then passes on well-formed data without edits. What a person should still check is listed.

Plain library code: no Dagster import.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pandas as pd

SAMPLE_ROWS = 100_000
CATEGORY_CAP = 50  # distinct values up to which a text column is a category with allowed values
RANGE_MARGIN = 0.1  # numeric bounds widened by this share of the observed range (each side)
SETTLE_SHARE = 0.9  # a column this numeric (or date-like) but not wholly is "not settled"
KEY_HINT = re.compile(r"(^|_|\b)(id|key|uuid)$", re.IGNORECASE)
TIME_HINT = re.compile(r"date|time|day|timestamp", re.IGNORECASE)
DATE_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DTYPES = ("int", "float", "string", "category", "date")
# a binary target whose labels say which one is the event: the first word of a pair is positive
POSITIVE_WORDS = {"yes": "no", "y": "n", "true": "false", "t": "f", "positive": "negative"}


class InferError(ValueError):
    """The sample cannot settle part of the spec; the message names the file, the column and
    what to do."""


@dataclass
class Inferred:
    """The spec (as YAML-ready data) and what a person should check before ingesting."""

    spec: dict
    checks: list[str] = field(default_factory=list)
    sample_rows: int = 0

    def yaml(self, source: str) -> str:
        import yaml

        head = (
            f"# Written by `mlops init` from a sample of {self.sample_rows} row(s) of {source}.\n"
            "# Review it (see the list `mlops init` printed), then: mlops ingest "
            f"{self.spec['name']} --file {source}\n"
        )
        # one line per column rule ({dtype: float, min: 0.0, max: 9.5}), blocks elsewhere
        body = yaml.safe_dump(
            self.spec, sort_keys=False, allow_unicode=True, width=100, default_flow_style=None
        )
        return head + body


# ---- reading a sample ----------------------------------------------------------------------


def _text_frame(data: bytes | BinaryIO, rows: int) -> pd.DataFrame:
    return pd.read_csv(
        io.BytesIO(data) if isinstance(data, bytes) else data,
        dtype=str,
        keep_default_na=False,
        na_values=[""],
        index_col=False,
        nrows=rows,
    )


def read_sample(source: str | Path, rows: int = SAMPLE_ROWS) -> tuple[pd.DataFrame, bool]:
    """Up to ``rows`` rows of a CSV or Parquet file (or the files of a folder, in name order)
    as text cells, exactly as ingestion stores and reads them; and whether the source holds
    more rows than the sample."""
    import pyarrow.parquet as pq

    from mlops_assets.ingest import SOURCE_SUFFIXES

    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in SOURCE_SUFFIXES)
    elif source.is_file():
        files = [source]
    else:
        raise FileNotFoundError(f"{source}: no such file or folder")
    if not files:
        raise InferError(f"folder {source} holds no .csv or .parquet files")
    frames: list[pd.DataFrame] = []
    more = False
    left = rows
    for f in files:
        if left <= 0:
            more = True
            break
        if f.suffix.lower() in (".parquet", ".pq"):
            pf = pq.ParquetFile(f)
            batch = next(pf.iter_batches(batch_size=left), None)
            part = batch.to_pandas() if batch is not None else pd.DataFrame()
            more = more or pf.metadata.num_rows > left
            buf = io.BytesIO()
            # the same conversion ingestion applies: CSV text, dates as YYYY-MM-DD
            for col in part.columns:
                if pd.api.types.is_datetime64_any_dtype(part[col]):
                    part[col] = part[col].dt.strftime("%Y-%m-%d")
            part.to_csv(buf, index=False)
            frame = _text_frame(buf.getvalue(), left)
        elif f.suffix.lower() == ".csv":
            with f.open("rb") as fh:  # only the rows sampled are read, whatever the file's size
                frame = _text_frame(fh, left + 1)
            if len(frame) > left:
                more, frame = True, frame.iloc[:left]
        else:
            raise InferError(f"{f}: unsupported file type {f.suffix!r}: use .csv or .parquet")
        frames.append(frame)
        left -= len(frame)
    sample = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if sample.empty:
        raise InferError(f"{source}: no rows to learn a spec from")
    return sample, more


# ---- one column ----------------------------------------------------------------------------


def _bounds(values: pd.Series, integer: bool) -> tuple[float, float]:
    """The observed range widened by RANGE_MARGIN each side (not below 0 if it never was),
    rounded outward: whole numbers for ints, about three significant digits otherwise."""
    lo, hi = float(values.min()), float(values.max())
    margin = (hi - lo) * RANGE_MARGIN or max(abs(hi), 1.0) * RANGE_MARGIN
    low, high = lo - margin, hi + margin
    if lo >= 0 > low:
        low = 0.0  # a quantity that was never negative stays non-negative
    if integer:
        return math.floor(low), math.ceil(high)
    digits = max(0, 2 - math.floor(math.log10(max(abs(high - low), 1e-9))))
    return round(math.floor(low * 10**digits) / 10**digits, digits), round(
        math.ceil(high * 10**digits) / 10**digits, digits
    )


def infer_column(
    file: str, name: str, cells: pd.Series, cap: int = CATEGORY_CAP, forced: str | None = None
) -> dict:
    """The ColumnSpec (as data) of one text column of the sample."""
    present = cells.dropna()
    out: dict = {}
    if present.empty and forced is None:
        raise InferError(
            f"{file}: column {name!r} is empty in the sample, so its dtype cannot be settled: "
            f"pass --dtype '{name}=TYPE' (one of {', '.join(DTYPES)}) or drop the column"
        )
    numbers = pd.to_numeric(present, errors="coerce")
    numeric_share = float(numbers.notna().mean()) if len(present) else 0.0
    dates = (
        present.str.match(DATE_TEXT)
        & pd.to_datetime(present, format="%Y-%m-%d", errors="coerce").notna()
    )
    date_share = float(dates.mean()) if len(present) else 0.0
    dtype = forced
    if dtype is None:
        if numeric_share == 1.0:
            whole = bool((numbers % 1 == 0).all()) and bool((numbers.abs() < 2**53).all())
            # leading zeros ('007') are identifiers, not numbers: keep them as text
            padded = present.str.match(r"^-?0\d").any()
            dtype = "string" if padded else ("int" if whole else "float")
        elif date_share == 1.0:
            dtype = "date"
        elif numeric_share >= SETTLE_SHARE or date_share >= SETTLE_SHARE:
            kind = "numeric" if numeric_share >= SETTLE_SHARE else "YYYY-MM-DD date"
            odd = present[~(numbers.notna() if kind == "numeric" else dates)]
            raise InferError(
                f"{file}: column {name!r} is {kind} in {max(numeric_share, date_share):.0%} of "
                f"the sample but not in {len(odd)} row(s) (e.g. {odd.head(3).tolist()}), so its "
                "dtype cannot be settled: fix those values (an empty cell is a missing value), "
                f"or pass --dtype '{name}=string' to keep the column as text"
            )
        else:
            dtype = "category" if present.nunique() <= cap else "string"
    out["dtype"] = dtype
    if cells.isna().any():
        out["nullable"] = True
    if dtype in ("int", "float") and not present.empty:
        typed = pd.to_numeric(present, errors="coerce").dropna()
        if len(typed) != len(present):
            raise InferError(
                f"{file}: column {name!r} given as {dtype} holds values that are not numbers "
                f"(e.g. {present[pd.to_numeric(present, errors='coerce').isna()].head(3).tolist()})"
            )
        lo, hi = _bounds(typed, dtype == "int")
        out["min"], out["max"] = lo, hi
    if dtype == "category":
        values = sorted(present.unique().tolist(), key=str)
        if len(values) > cap:
            raise InferError(
                f"{file}: column {name!r} has {len(values)} distinct values, more than the cap of "
                f"{cap} for a category: pass --dtype '{name}=string' or a higher --max-categories"
            )
        out["allowed"] = values
    return out


# ---- the spec ------------------------------------------------------------------------------


def _guess_key(sample: pd.DataFrame, columns: dict[str, dict], exclude: set[str]) -> str | None:
    unique = [
        c
        for c in sample.columns
        if c not in exclude
        and columns[c]["dtype"] in ("string", "int", "category")
        and sample[c].notna().all()
        and sample[c].is_unique
    ]
    named = [c for c in unique if KEY_HINT.search(c.strip())]
    found = named or [c for c in unique if columns[c]["dtype"] == "string"]
    return found[0] if found else None


def _guess_timestamp(columns: dict[str, dict], exclude: set[str]) -> str | None:
    dated = [c for c, cs in columns.items() if cs["dtype"] == "date" and c not in exclude]
    named = [c for c in dated if TIME_HINT.search(c)]
    found = named or dated
    return found[0] if found else None


def _task(target: str, cs: dict, cells: pd.Series) -> tuple[str, list]:
    values = cells.dropna()
    distinct = sorted(values.unique().tolist(), key=str)
    if cs["dtype"] == "float":
        return "regression", distinct
    if cs["dtype"] in ("int", "category") and len(distinct) == 2:
        return "classification", distinct  # 0/1, or two labels (yes/no, M/B, 1/2)
    if cs["dtype"] == "int" and len(distinct) > 20:
        return "regression", distinct
    if cs["dtype"] in ("int", "category") and len(distinct) >= 2:
        return "multiclass", distinct
    return "", distinct


def infer_spec(
    name: str,
    sample: pd.DataFrame,
    target: str,
    file: str,
    *,
    more_rows: bool = False,
    key: str | None = None,
    timestamp: str | None = None,
    task: str | None = None,
    dtypes: dict[str, str] | None = None,
    cap: int = CATEGORY_CAP,
) -> Inferred:
    """A spec named ``name`` for ``sample`` (text cells) predicting ``target``."""
    from mlops_assets.specs.model import NAME, TASK_METRICS

    if not NAME.match(name):
        raise InferError(f"spec name {name!r} must be lower_snake_case (e.g. {_snake(name)!r})")
    dtypes = dict(dtypes or {})
    for col, dt_ in dtypes.items():
        if col not in sample.columns:
            raise InferError(f"--dtype {col!r}: {file} has no such column")
        if dt_ not in DTYPES:
            raise InferError(f"--dtype {col}={dt_}: use one of {', '.join(DTYPES)}")
    if target not in sample.columns:
        raise InferError(
            f"{file}: no column {target!r} to predict: the columns are "
            f"{', '.join(map(repr, sample.columns))}"
        )
    if sample[target].isna().any():
        rows = [int(i) + 1 for i in sample.index[sample[target].isna()][:5]]
        raise InferError(
            f"{file}: target column {target!r} is empty in row(s) {rows}: every row needs a "
            "value to learn from; fill or drop them"
        )
    columns = {c: infer_column(file, c, sample[c], cap, dtypes.get(c)) for c in sample.columns}
    checks: list[str] = []
    if more_rows:
        checks.append(
            f"The rules come from the first {len(sample)} rows only: check the ranges (min/max, "
            "widened by 10% of the observed range) and the allowed categories against the "
            "whole data, or rerun with a larger --sample"
        )

    # the target and the task
    task_found, classes = _task(target, columns[target], sample[target])
    task = task or task_found
    if not task:
        raise InferError(
            f"{file}: target {target!r} ({columns[target]['dtype']}, {len(classes)} distinct "
            f"value(s): {classes[:5]}) fits no task: a classifier needs at least two classes "
            "(ingest data with both outcomes), a regression a numeric target"
        )
    if task in ("classification", "multiclass") and len(classes) < 2:
        raise InferError(
            f"{file}: target {target!r} has one class in the sample ({classes}): a classifier "
            "needs at least two; sample more rows (--sample) or ingest data with every outcome"
        )
    if task == "classification" and len(classes) != 2:
        raise InferError(
            f"{file}: task classification needs a target with two classes, {target!r} holds "
            f"{len(classes)} ({classes[:5]}): use --task multiclass"
        )
    positive: str | int | None = None
    if task == "classification" and set(classes) != {"0", "1"}:  # 0/1: 1 is positive
        found, why = _positive_class(sample[target], classes)
        as_int = columns[target]["dtype"] == "int"
        labels = [int(c) if as_int else c for c in classes]
        positive = int(found) if as_int else found
        other = next(c for c in labels if c != positive)
        checks.append(
            f"Target {target!r} has the labels {labels}; positive class {positive!r} ({why}): "
            f"the model answers P({positive!r}), and f1 and the decision threshold count it. "
            f"If {other!r} is the event you predict, set positive_class: {other!r}"
        )
    if task in ("classification", "multiclass"):
        columns[target].pop("min", None)
        columns[target].pop("max", None)
        if columns[target]["dtype"] == "int":
            columns[target]["allowed"] = [int(c) for c in classes]
        counts = sample[target].value_counts()
        rare = counts[counts < 10]
        if len(rare):
            checks.append(
                f"Target {target!r}: class(es) {rare.index.tolist()} have fewer than 10 rows in "
                "the sample: a class missing from the holdout stops training; ingest more rows "
                "of them"
            )
    if task == "classification" and positive is None:
        columns[target] = {"dtype": "int", "allowed": [0, 1]}
    elif task == "classification":  # the two labels, listed: positive_class names one
        kind = "int" if columns[target]["dtype"] == "int" else "category"
        columns[target] = {"dtype": kind, "allowed": columns[target].get("allowed", classes)}

    # key and timestamp
    key = key or _guess_key(sample, columns, {target})
    if key is None:
        raise InferError(
            f"{file}: no column is unique in every row of the sample, so none can be the key: "
            "add an identifier column (e.g. row_id) or pass --key COLUMN"
        )
    if key not in columns:
        raise InferError(f"--key {key!r}: {file} has no such column")
    if columns[key]["dtype"] != "string":
        columns[key] = {"dtype": "string"}  # identifiers are compared as text
    timestamp = timestamp or _guess_timestamp(columns, {key, target})
    if timestamp is None:
        raise InferError(
            f"{file}: no YYYY-MM-DD date column, so none can be the event date of a row: add one "
            "(e.g. the day the row was observed) or pass --timestamp COLUMN"
        )
    if timestamp not in columns or columns[timestamp]["dtype"] != "date":
        raise InferError(f"--timestamp {timestamp!r}: not a YYYY-MM-DD date column of {file}")
    checks.append(
        f"Key {key!r} (unique in the sample) and event date {timestamp!r}: confirm them; "
        "a batch whose keys are already on main is rejected"
    )

    features = [
        c
        for c in sample.columns
        if c not in (key, timestamp, target) and columns[c]["dtype"] != "date"
    ]
    text = [c for c in features if columns[c]["dtype"] == "string"]
    features = [c for c in features if c not in text]
    if text:
        checks.append(
            f"Left out of the features: free-text column(s) {text} (more than {cap} distinct "
            "values); make one a category with --dtype COL=category --max-categories N to use it"
        )
    if not features:
        raise InferError(f"{file}: no column is left to learn from besides key, date and target")
    nullable = [c for c in features if columns[c].get("nullable")]
    if nullable:
        checks.append(f"Nullable in the sample (missing values allowed): {nullable}")

    metric, floor, why = {
        "classification": ("roc_auc", 0.6, "0.5 is a model with no skill"),
        "multiclass": (
            ("roc_auc_ovr", 0.6, "0.5 is a model with no skill")
            if len(classes) > 2
            else ("f1_macro", 0.6, "about 0.5 is a guess on two balanced classes")
        ),
        "regression": ("r2", 0.1, "0 is predicting the mean"),
    }[task]
    assert metric in TASK_METRICS[task]
    checks.append(
        f"Task {task} from target {target!r}; the gate promotes on {metric} >= {floor} ({why}): "
        "raise the floor to what your use needs"
    )
    repository = name.replace("_", "-")
    if len(repository) < 3:
        repository = f"{repository}-data"
    spec = {
        "name": name,
        "description": f"Predicts {target} from {Path(file).name} (written by mlops init).",
        "task": task,
        "dataset": {
            "repository": repository,
            "prefix": "batches/",
            "key": key,
            "timestamp": timestamp,
            # enough rows to split and gate on, without blocking a first small batch
            "min_rows": max(1, min(100, len(sample) // 2)),
            "columns": columns,
        },
        "target": target,
        **({} if positive is None else {"positive_class": positive}),
        "features": features,
        "split": {"holdout_fraction": 0.2, "seed": 42},
        "model": {"estimator": "random_forest", "n_estimators": 200, "random_state": 0},
        "evaluation": {"metric": metric, "floor": floor, "tolerance": 0.03},
    }
    return Inferred(spec, checks, len(sample))


def _positive_class(cells: pd.Series, classes: list[str]) -> tuple[str, str]:
    """The positive one of a binary target's two labels, and why: the label that says so
    (yes against no, true against false), else the minority class (the event a model is
    usually asked to find: fraud, churn, a malignant tumour), else the second in sorted order."""
    lower = {c.strip().lower(): c for c in classes}
    for yes, no in POSITIVE_WORDS.items():
        if set(lower) == {yes, no}:
            return lower[yes], f"{lower[yes]!r} against {lower[no]!r}"
    counts = cells.value_counts()
    low, high = sorted(classes, key=lambda c: (int(counts.get(c, 0)), c))
    if counts.get(low, 0) == counts.get(high, 0):
        return high, "the classes are even: the second in sorted order"
    share = int(counts[low]) / int(counts.sum())
    return low, f"the minority class, {share:.0%} of the sample"


def _snake(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "model"


def verify(inferred: Inferred, sample: pd.DataFrame, file: str) -> None:
    """Validate the spec and audit the sample against it: a spec that would reject the very
    rows it came from is never written."""
    from pydantic import ValidationError

    from mlops_assets.quality import audit_frame, type_columns
    from mlops_assets.specs.model import ModelSpec, validation_problems

    try:
        spec = ModelSpec.model_validate(inferred.spec)
    except ValidationError as e:
        raise InferError(
            f"{file}: the inferred spec is not valid: {validation_problems(e)}"
        ) from None
    typed, bad = type_columns(sample, spec.dataset)
    problems = [
        f"column {c!r}: {int(m.sum())} value(s) are not {spec.dataset.columns[c].dtype}"
        for c, m in bad.items()
    ]
    problems += [str(v) for v in audit_frame(typed, spec.dataset) if v.rule != "row_count"]
    if problems:
        raise InferError(
            f"{file}: the sample breaks the spec inferred from it ({'; '.join(problems[:3])}): "
            "pass --dtype for the columns named"
        )
