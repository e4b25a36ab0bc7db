"""Request validation against a model's input schema (the spec's features, which are also the
logged model signature's inputs): a bad request names the field and the row.

Two layers. The model's contract (every feature, nothing else, a number or a string as the
feature's type) is always enforced. The spec's rules for each feature's column (min/max,
allowed values, nullability, and a finite number within float32 range, which the trees cast
to) follow the spec's ``serving.input_rules``: ``reject`` (default) answers 422 naming field
and row, ``flag`` serves the row and counts what it broke (``Flags``)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

import numpy as np
import pandas as pd

from mlops_assets.specs import ModelSpec

FLOAT32_MAX = float(np.finfo(np.float32).max)

# (field, rule) -> rows that broke it; rule is one of null, finite, float32, range, allowed
Flags = Counter


class InputError(ValueError):
    """A request the model cannot take; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


def show(v: object) -> str:
    """A value for an error message: short, and never a recursive repr of a nested body."""
    if isinstance(v, list | dict):
        return f"a {type(v).__name__} of {len(v)}"
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


class InputSchema:
    """What one row must look like: every feature, nothing else, each of the right type, and
    (per the spec's serving policy) within the rules of its dataset column."""

    def __init__(self, spec: ModelSpec):
        cols = spec.dataset.columns
        self.model = spec.name
        self.features = list(spec.features)
        self.numeric = set(spec.numeric_features)
        self.nullable = {f for f in self.features if cols[f].nullable}
        self.wanted = set(self.features)
        self.columns = {f: cols[f] for f in self.features}
        self.allowed_numbers = {
            f: {float(a) for a in cs.allowed if not isinstance(a, str)}
            for f, cs in self.columns.items()
            if cs.allowed is not None
        }
        self.allowed_text = {
            f: {str(a) for a in cs.allowed} for f, cs in self.columns.items() if cs.allowed
        }
        self.flag = spec.serving.input_rules == "flag"
        self.hint = (
            f"fix the value, or set `serving: {{input_rules: flag}}` in the {spec.name!r} spec "
            "to serve such rows and count them"
        )

    def describe(self) -> list[dict]:
        out = []
        for f in self.features:
            cs = self.columns[f]
            d: dict = {
                "name": f,
                "datatype": "FP64" if f in self.numeric else "BYTES",
                "nullable": f in self.nullable,
                "shape": [-1],
            }
            if cs.min is not None:
                d["min"] = cs.min
            if cs.max is not None:
                d["max"] = cs.max
            if cs.allowed is not None:
                d["allowed"] = list(cs.allowed)
            out.append(d)
        return out

    def _broken(self, f: str, row: int, what: str) -> InputError:
        return InputError(f"row {row}: field '{f}' {what}; {self.hint}", field=f)

    def _value(self, f: str, v: object, row: int) -> object:
        if v is None:
            if f in self.nullable or self.flag:  # flag: served, counted by ``check``
                return None
            raise self._broken(f, row, "is null; the spec requires it")
        if f in self.numeric:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise InputError(
                    f"row {row}: field '{f}' must be a number, got {type(v).__name__} {show(v)}",
                    field=f,
                )
            try:
                x = float(v)
            except OverflowError:
                raise InputError(
                    f"row {row}: field '{f}' is too large for a 64-bit float", field=f
                ) from None
            if math.isnan(x):
                if f in self.nullable or self.flag:
                    return None
                raise self._broken(f, row, "is NaN; the spec requires a number")
            if math.isinf(x) and not self.flag:
                raise self._broken(f, row, f"is {v}; send a finite number")
            return x
        if not isinstance(v, str):
            raise InputError(
                f"row {row}: field '{f}' must be a string, got {type(v).__name__} {show(v)}",
                field=f,
            )
        return v

    def count_records(self, records: object) -> int:
        """Rows in a records body, before any validation work (for the row limit)."""
        if isinstance(records, list):
            return len(records)
        return 1 if records is not None else 0

    def columns_from_records(self, records: object) -> dict[str, list]:
        """Validate JSON records (a list of objects) into one list per feature."""
        if not isinstance(records, list) or not records:
            raise InputError("'records' must be a non-empty list of objects", field="records")
        out: dict[str, list] = {}
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise InputError(f"row {i}: must be an object of feature values", field="records")
            keys = rec.keys()
            if keys != self.wanted:
                unknown = sorted(set(keys) - self.wanted)
                missing = [f for f in self.features if f not in keys]
                if unknown:
                    raise InputError(
                        f"row {i}: unknown field {show(unknown[0])}; the model takes "
                        f"{', '.join(self.features)}",
                        field=unknown[0][:100],
                    )
                raise InputError(f"row {i}: missing field '{missing[0]}'", field=missing[0])
        for f in self.features:
            out[f] = self._column(f, [rec[f] for rec in records])
        return out

    def _column(self, f: str, values: list) -> list:
        """Check one column's types; the common all-valid case costs one pass over the types.
        Numbers come back as floats, so nothing downstream meets a 100-digit integer."""
        kinds = set(map(type, values))
        if f in self.numeric:
            if kinds <= {int, float}:
                try:
                    arr = np.asarray(values, dtype="float64")
                except OverflowError:
                    arr = None
                if arr is not None and np.isfinite(arr).all():
                    return arr.tolist()
        elif kinds == {str}:
            return values
        return [self._value(f, v, i) for i, v in enumerate(values)]

    def columns_from_v2(self, inputs: object) -> dict[str, list]:
        """Validate Open Inference Protocol (KServe V2) inputs: one named tensor per feature."""
        if not isinstance(inputs, list) or not inputs:
            raise InputError("'inputs' must be a non-empty list of tensors", field="inputs")
        by_name: dict[str, list] = {}
        for t in inputs:
            if not isinstance(t, dict) or not isinstance(t.get("name"), str):
                raise InputError("each input needs a 'name'", field="inputs")
            name = t["name"]
            if name not in self.wanted:
                raise InputError(
                    f"unknown input {show(name)}; the model takes {', '.join(self.features)}",
                    field=name[:100],
                )
            data = t.get("data")
            if not isinstance(data, list):
                raise InputError(f"input '{name}': 'data' must be a list", field=name)
            by_name[name] = data
        missing = [f for f in self.features if f not in by_name]
        if missing:
            raise InputError(f"missing input '{missing[0]}'", field=missing[0])
        lengths = {len(v) for v in by_name.values()}
        if len(lengths) != 1 or 0 in lengths:
            raise InputError("all inputs must have the same, non-zero length", field="inputs")
        return {f: [self._value(f, v, i) for i, v in enumerate(by_name[f])] for f in self.features}

    def check(self, columns: dict[str, list]) -> Flags:
        """The spec's rules on typed columns: with ``reject``, the first row that breaks one is
        an InputError naming field and row; with ``flag``, how many rows broke which rule."""
        flags: Flags = Counter()
        for f in self.features:
            values = columns[f]
            for i in self._suspects(f, values):
                broken = self._rule(f, values[i])
                if broken is None:
                    continue
                rule, what = broken
                if not self.flag:
                    raise self._broken(f, i, what)
                flags[(f, rule)] += 1
        return flags

    def _rule(self, f: str, v: object) -> tuple[str, str] | None:
        """The rule of ``f``'s column that the (typed) value ``v`` breaks, and how; or None."""
        cs = self.columns[f]
        if v is None:
            return None if f in self.nullable else ("null", "is null; the spec requires it")
        if isinstance(v, float):
            if math.isinf(v):
                return "finite", f"is {v}; send a finite number"
            if abs(v) > FLOAT32_MAX:
                return "float32", (
                    f"is {v:g}, beyond float32 range (±{FLOAT32_MAX:.4g}), which the model "
                    "casts numbers to"
                )
            if (cs.min is not None and v < cs.min) or (cs.max is not None and v > cs.max):
                return "range", f"is {v:g}, outside the spec's range [{cs.min}, {cs.max}]"
            if cs.allowed is not None and v not in self.allowed_numbers[f]:
                return "allowed", f"is {v:g}, not one of the spec's {list(cs.allowed)}"
            return None
        if cs.allowed is not None and v not in self.allowed_text[f]:
            return "allowed", f"is {show(v)}, not one of the spec's {list(cs.allowed)}"
        return None

    def _suspects(self, f: str, values: list) -> Iterable[int]:
        """Rows of ``f`` that may break a rule: every row of a small request; for a large
        numeric column, the ones numpy finds (so a 10,000-row batch costs a few array ops)."""
        if len(values) <= 64 or f not in self.numeric:
            return range(len(values))
        cs = self.columns[f]
        arr = np.array([np.nan if v is None else v for v in values], dtype="float64")
        with np.errstate(invalid="ignore"):
            mask = ~np.isfinite(arr) if f not in self.nullable else np.isinf(arr)
            mask |= np.abs(arr) > FLOAT32_MAX
            if cs.min is not None:
                mask |= arr < cs.min
            if cs.max is not None:
                mask |= arr > cs.max
            if cs.allowed is not None:
                mask |= ~np.isin(arr, list(self.allowed_numbers[f])) & ~np.isnan(arr)
        return np.flatnonzero(mask).tolist()

    def frame(self, columns: dict[str, list]) -> pd.DataFrame:
        """The DataFrame the pipeline was trained on: float64 numbers, object categories."""
        data = {}
        for f in self.features:
            values = columns[f]
            if f in self.numeric:
                data[f] = np.array([np.nan if v is None else v for v in values], dtype="float64")
            else:
                data[f] = np.array(values, dtype=object)
        return pd.DataFrame(data, columns=self.features)
