"""Data-quality rules of a dataset spec: parse a batch file and list what breaks a rule.

Used twice: by the write-audit-publish ingestion (on the ingest branch, before main) and by the
``dataset`` asset's blocking checks (on the commit it read). Every violation names the file,
the column, the rule and what to do. Plain library code: no Dagster import.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlops_assets.specs import DatasetSpec
from mlops_assets.store import VersionedStore

if TYPE_CHECKING:
    import pandas as pd

# The check (asset check name) each rule belongs to.
RULE_CHECK = {
    "encoding": "schema",
    "empty_file": "schema",
    "unparseable": "schema",
    "missing_column": "schema",
    "unexpected_column": "schema",
    "dtype": "schema",
    "nulls": "nulls",
    "range": "ranges",
    "allowed_values": "ranges",
    "row_count": "row_count",
    "duplicate_keys": "duplicate_keys",
}
CHECKS = ("schema", "nulls", "ranges", "row_count", "duplicate_keys")
SOURCE_COLUMN = "_source_file"


@dataclass(frozen=True)
class Violation:
    file: str
    column: str | None
    rule: str
    detail: str

    @property
    def check(self) -> str:
        return RULE_CHECK[self.rule]

    def __str__(self) -> str:
        where = f"file '{self.file}'" + (f" column '{self.column}'" if self.column else "")
        return f"{where}: rule '{self.rule}': {self.detail}"


def _rows(mask: pd.Series, limit: int = 5) -> str:
    """Data-row numbers (1 = first row after the header) where ``mask`` holds."""
    idx = [int(i) + 1 for i in mask[mask].index[:limit]]
    more = int(mask.sum()) - len(idx)
    return ", ".join(map(str, idx)) + (f" and {more} more" if more > 0 else "")


def _ragged_line(text: str) -> tuple[int, int, int] | None:
    """(line, fields, header fields) of the first row whose field count differs."""
    rows = csv.reader(io.StringIO(text))
    header = next(rows, [])
    for row in rows:
        if row and len(row) != len(header):
            return rows.line_num, len(row), len(header)
    return None


def type_columns(df: pd.DataFrame, spec: DatasetSpec) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    """The spec's columns of a text frame (``dtype=str``), converted to their dtypes (in spec
    order, whatever the file's order), and per column the mask of cells that did not convert
    (they become missing, so one bad cell never hides the others)."""
    import pandas as pd

    out = pd.DataFrame(index=df.index)
    bad_cells: dict[str, pd.Series] = {}
    for col, cs in spec.columns.items():
        if col not in df.columns:
            continue
        raw_col = df[col]
        if cs.dtype in ("int", "float"):
            typed = pd.to_numeric(raw_col, errors="coerce").astype("float64")
            bad = typed.isna() & raw_col.notna()
            if cs.dtype == "int":
                # Fractions, and integers beyond int64, are not ints of this column.
                wrong = typed.notna() & ((typed % 1 != 0) | (typed.abs() >= 2**63))
                bad |= wrong
                typed = typed.where(~wrong)
            out[col] = typed.astype("Int64" if cs.dtype == "int" else "float64")
        elif cs.dtype == "date":
            dates = pd.to_datetime(raw_col, format="%Y-%m-%d", errors="coerce")
            bad = dates.isna() & raw_col.notna()
            out[col] = dates
        else:
            out[col] = raw_col.astype("string")
            bad = pd.Series(False, index=df.index)
        if bad.any():
            bad_cells[col] = bad
    return out, bad_cells


def column_violations(file: str, columns: list[str], spec) -> list[Violation]:
    """A batch's header against the spec: each missing and each unexpected column."""
    missing = [
        Violation(file, c, "missing_column", "column is missing: add it to the batch")
        for c in spec.columns
        if c not in columns
    ]
    unexpected = [
        Violation(
            file,
            c,
            "unexpected_column",
            "column is not in the dataset spec: remove it or add it to the spec",
        )
        for c in columns
        if c not in spec.columns
    ]
    return missing + unexpected


def parse_batch(
    file: str, raw: bytes, spec: DatasetSpec
) -> tuple[pd.DataFrame | None, list[Violation]]:
    """Decode, parse and type one CSV batch; return the typed frame and schema violations.

    Values that cannot be converted to the column's dtype become missing and are reported,
    so one bad cell never hides the others.
    """
    import pandas as pd

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        return None, [
            Violation(
                file,
                None,
                "encoding",
                f"not UTF-8 (byte 0x{raw[e.start]:02x} on line {line}): re-export the file as "
                "UTF-8",
            )
        ]
    if not text.strip():
        return None, [
            Violation(file, None, "empty_file", "the file is empty: expected a CSV header and rows")
        ]
    ragged = _ragged_line(text)
    if ragged:
        line, fields, expected = ragged
        return None, [
            Violation(
                file,
                None,
                "unparseable",
                f"line {line} has {fields} field(s) but the header has {expected} (a stray "
                "comma or an unquoted value?): fix that line and re-export",
            )
        ]
    try:
        df = pd.read_csv(
            io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""], index_col=False
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        return None, [Violation(file, None, "unparseable", f"not a valid CSV file: {e}")]
    violations: list[Violation] = []
    if df.empty:
        violations.append(Violation(file, None, "empty_file", "the file has a header but no rows"))
    violations += column_violations(file, list(df.columns), spec)
    out, bad_cells = type_columns(df, spec)
    for col, bad in bad_cells.items():
        examples = ", ".join(repr(v) for v in df[col][bad].head(3))
        violations.append(
            Violation(
                file,
                col,
                "dtype",
                f"{int(bad.sum())} value(s) are not {spec.columns[col].dtype} (rows {_rows(bad)}; "
                f"e.g. {examples}): fix the values or the column's dtype in the spec",
            )
        )
    out[SOURCE_COLUMN] = file
    return out, violations


def audit_frame(
    df: pd.DataFrame,
    spec: DatasetSpec,
    existing_keys: Iterable[str] = (),
    check_row_count: bool = False,
) -> list[Violation]:
    """Nulls, ranges, allowed values, duplicate keys (within and against ``existing_keys``)."""
    import pandas as pd

    violations: list[Violation] = []
    files = df[SOURCE_COLUMN] if SOURCE_COLUMN in df else pd.Series("(frame)", index=df.index)

    def where(mask: pd.Series) -> str:
        return ", ".join(sorted(set(files[mask])))

    for col, cs in spec.columns.items():
        if col not in df.columns:
            continue
        values = df[col]
        if not cs.nullable and values.isna().any():
            mask = values.isna()
            violations.append(
                Violation(
                    where(mask),
                    col,
                    "nulls",
                    f"{int(mask.sum())} missing value(s) where none are allowed "
                    f"(rows {_rows(mask)}): fill them or mark the column nullable in the spec",
                )
            )
        present = values.notna()
        if cs.min is not None or cs.max is not None:
            low = present & (values < cs.min) if cs.min is not None else present & False
            high = present & (values > cs.max) if cs.max is not None else present & False
            mask = (low | high).fillna(False).astype(bool)
            if mask.any():
                violations.append(
                    Violation(
                        where(mask),
                        col,
                        "range",
                        f"{int(mask.sum())} value(s) outside [{cs.min}, {cs.max}] "
                        f"(rows {_rows(mask)}; e.g. {values[mask].head(3).tolist()})",
                    )
                )
        if cs.allowed is not None:
            allowed = {str(a) for a in cs.allowed}
            as_text = values.astype("string")
            mask = (present & ~as_text.isin(allowed)).fillna(False).astype(bool)
            if mask.any():
                seen = sorted(set(as_text[mask].head(20)))
                violations.append(
                    Violation(
                        where(mask),
                        col,
                        "allowed_values",
                        f"{int(mask.sum())} value(s) not in {sorted(allowed)} "
                        f"(rows {_rows(mask)}; found {seen})",
                    )
                )
    if spec.key in df.columns:
        keys = df[spec.key]
        dup = keys.notna() & keys.duplicated(keep=False)
        if dup.any():
            violations.append(
                Violation(
                    where(dup),
                    spec.key,
                    "duplicate_keys",
                    f"{int(keys[dup].nunique())} key(s) appear more than once "
                    f"(e.g. {keys[dup].head(3).tolist()}): keys must be unique",
                )
            )
        existing = set(existing_keys)
        if existing:
            clash = keys.isin(existing)
            if clash.any():
                violations.append(
                    Violation(
                        where(clash),
                        spec.key,
                        "duplicate_keys",
                        f"{int(clash.sum())} key(s) already exist on main "
                        f"(e.g. {keys[clash].head(3).tolist()}): a batch must bring new rows",
                    )
                )
    if check_row_count and len(df) < spec.min_rows:
        violations.append(
            Violation(
                where(pd.Series(True, index=df.index)) or "(no files)",
                None,
                "row_count",
                f"{len(df)} row(s), fewer than the spec's min_rows={spec.min_rows}: "
                "ingest more batches or lower min_rows",
            )
        )
    return violations


def load_dataset(
    files: dict[str, bytes], spec: DatasetSpec
) -> tuple[pd.DataFrame, list[Violation]]:
    """Parse every batch file and audit the concatenation; files that cannot be parsed at all
    are left out and reported."""
    import pandas as pd

    frames, violations = [], []
    for name in sorted(files):
        df, problems = parse_batch(name, files[name], spec)
        violations.extend(problems)
        if df is not None and not df.empty:
            frames.append(df)
    if frames:
        data = pd.concat(frames, ignore_index=True)
    else:
        data = pd.DataFrame({c: pd.Series(dtype="object") for c in [*spec.columns, SOURCE_COLUMN]})
    violations.extend(audit_frame(data, spec, check_row_count=True))
    return data, violations


def read_dataset(
    store: VersionedStore, spec: DatasetSpec, commit: str
) -> tuple[pd.DataFrame, list[Violation], int]:
    """The dataset at exactly ``commit`` (an immutable commit id, never a branch): every batch
    file under the spec's prefix, parsed and audited. Returns the rows, the violations and the
    number of batch files read. The one place the platform reads a dataset."""
    paths = store.list(commit, spec.prefix)
    data, violations = load_dataset({p: store.get(commit, p) for p in paths}, spec)
    return data, violations, len(paths)


# ---- streaming audit: one batch file, chunk by chunk ------------------------------------------

AUDIT_CHUNK_ROWS = 100_000


class _Tally:
    """One (column, rule) across chunks: how many rows, the first row numbers, examples."""

    def __init__(self, examples: int = 3) -> None:
        self.count = 0
        self.rows: list[int] = []
        self.examples: list = []
        self.max_examples = examples

    def add(self, mask: pd.Series, values: pd.Series | None = None) -> None:
        n = int(mask.sum())
        if not n:
            return
        self.count += n
        if len(self.rows) < 5:
            self.rows += [int(i) + 1 for i in mask[mask].index[: 5 - len(self.rows)]]
        if values is not None and len(self.examples) < self.max_examples:
            self.examples += values[mask].head(self.max_examples - len(self.examples)).tolist()

    def where(self) -> str:
        more = self.count - len(self.rows)
        return ", ".join(map(str, self.rows)) + (f" and {more} more" if more > 0 else "")


def _first_problem(file: str, raw: bytes) -> Violation | None:
    """Encoding, emptiness and ragged lines, checked without decoding the whole file at once."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    step = 1 << 20
    for start in range(0, len(raw), step):
        try:
            decoder.decode(raw[start : start + step], final=start + step >= len(raw))
        except UnicodeDecodeError as e:
            at = start + e.start
            line = raw[:at].count(b"\n") + 1
            return Violation(
                file,
                None,
                "encoding",
                f"not UTF-8 (byte 0x{raw[at]:02x} on line {line}): re-export the file as UTF-8",
            )
    if not raw.strip():
        return Violation(
            file, None, "empty_file", "the file is empty: expected a CSV header and rows"
        )
    rows = csv.reader(io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8", newline=""))
    header = next(rows, [])
    for row in rows:
        if row and len(row) != len(header):
            return Violation(
                file,
                None,
                "unparseable",
                f"line {rows.line_num} has {len(row)} field(s) but the header has {len(header)} "
                "(a stray comma or an unquoted value?): fix that line and re-export",
            )
    return None


def audit_stream(
    file: str,
    raw: bytes,
    spec: DatasetSpec,
    existing_keys: set[str] | frozenset[str] = frozenset(),
    seen_keys: set[str] | None = None,
    chunk_rows: int = AUDIT_CHUNK_ROWS,
    progress=None,
) -> tuple[int, list[Violation]]:
    """Every rule of the spec on one CSV batch, read ``chunk_rows`` rows at a time, so a file
    of millions of rows is audited in bounded memory. Returns (rows, violations); each violation
    names the file, the column and the first row numbers (1 = first row after the header).

    ``seen_keys`` (shared across the files of one ingest) collects the batch's keys, so a key
    repeated in another chunk or file is a duplicate too. ``progress(rows)`` is called after
    each chunk."""
    import pandas as pd

    first = _first_problem(file, raw)
    if first is not None:
        return 0, [first]
    reader = pd.read_csv(
        io.BytesIO(raw),
        dtype=str,
        keep_default_na=False,
        na_values=[""],
        index_col=False,
        chunksize=chunk_rows,
    )
    violations: list[Violation] = []
    tallies: dict[tuple[str, str], _Tally] = {}
    seen = seen_keys if seen_keys is not None else set()
    dup_keys: list[str] = []
    rows = 0

    def tally(col: str, rule: str, examples: int = 3) -> _Tally:
        return tallies.setdefault((col, rule), _Tally(examples))

    try:
        for chunk in reader:
            if rows == 0:
                violations += column_violations(file, list(chunk.columns), spec)
            typed, bad_cells = type_columns(chunk, spec)
            for col, bad in bad_cells.items():
                tally(col, "dtype").add(bad, chunk[col])
            for col, cs in spec.columns.items():
                if col not in typed.columns:
                    continue
                values = typed[col]
                present = values.notna()
                if not cs.nullable:
                    # a cell that failed its dtype is reported as such, not again as missing
                    missing = values.isna() & ~bad_cells.get(col, present & False)
                    tally(col, "nulls").add(missing)
                if cs.min is not None or cs.max is not None:
                    low = present & (values < cs.min) if cs.min is not None else present & False
                    high = present & (values > cs.max) if cs.max is not None else present & False
                    tally(col, "range").add((low | high).fillna(False).astype(bool), values)
                if cs.allowed is not None:
                    allowed = {str(a) for a in cs.allowed}
                    as_text = values.astype("string")
                    mask = (present & ~as_text.isin(allowed)).fillna(False).astype(bool)
                    tally(col, "allowed_values", 20).add(mask, as_text)
            if spec.key in typed.columns:
                keys = typed[spec.key].dropna().astype(str)
                in_chunk = keys.duplicated(keep="first")
                again = keys.isin(seen) | in_chunk
                tally(spec.key, "duplicate_keys_rows").add(
                    again.reindex(typed.index, fill_value=False)
                )
                if again.any() and len(dup_keys) < 3:
                    dup_keys = (dup_keys + keys[again].head(3).tolist())[:3]
                seen.update(keys)
                if existing_keys:
                    clash = (
                        typed[spec.key].astype(str).isin(existing_keys) & typed[spec.key].notna()
                    )
                    tally(spec.key, "existing_keys").add(clash, typed[spec.key])
            rows += len(chunk)
            if progress is not None:
                progress(rows)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        return rows, [Violation(file, None, "unparseable", f"not a valid CSV file: {e}")]
    if rows == 0:
        violations.append(Violation(file, None, "empty_file", "the file has a header but no rows"))
    for (col, rule), t in tallies.items():
        if not t.count:
            continue
        cs = spec.columns[col]
        if rule == "dtype":
            detail = (
                f"{t.count} value(s) are not {cs.dtype} (rows {t.where()}; e.g. "
                f"{', '.join(repr(v) for v in t.examples)}): fix the values or the column's "
                "dtype in the spec"
            )
        elif rule == "nulls":
            detail = (
                f"{t.count} missing value(s) where none are allowed (rows {t.where()}): fill "
                "them or mark the column nullable in the spec"
            )
        elif rule == "range":
            detail = (
                f"{t.count} value(s) outside [{cs.min}, {cs.max}] (rows {t.where()}; e.g. "
                f"{t.examples})"
            )
        elif rule == "allowed_values":
            names = sorted({str(a) for a in cs.allowed or ()})
            detail = (
                f"{t.count} value(s) not in {names} (rows {t.where()}; found "
                f"{sorted(set(map(str, t.examples)))})"
            )
        elif rule == "duplicate_keys_rows":
            rule, detail = (
                "duplicate_keys",
                f"{t.count} row(s) repeat a key seen earlier in this batch (rows {t.where()}; "
                f"e.g. {dup_keys}): keys must be unique",
            )
        else:  # existing_keys
            rule, detail = (
                "duplicate_keys",
                f"{t.count} key(s) already exist on main (rows {t.where()}; e.g. "
                f"{[str(k) for k in t.examples]}): a batch must bring new rows",
            )
        violations.append(Violation(file, col, rule, detail))
    return rows, violations
