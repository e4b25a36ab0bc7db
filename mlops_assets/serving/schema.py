"""Request validation against a model's input schema (the spec's features, which are also the
logged model signature's inputs): a bad request names the field and the row."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mlops_assets.specs import ModelSpec


class InputError(ValueError):
    """A request the model cannot take; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


class InputSchema:
    """What one row must look like: every feature, nothing else, each of the right type."""

    def __init__(self, spec: ModelSpec):
        cols = spec.dataset.columns
        self.features = list(spec.features)
        self.numeric = set(spec.numeric_features)
        self.nullable = {f for f in self.features if cols[f].nullable}
        self.wanted = set(self.features)

    def describe(self) -> list[dict]:
        return [
            {
                "name": f,
                "datatype": "FP64" if f in self.numeric else "BYTES",
                "nullable": f in self.nullable,
                "shape": [-1],
            }
            for f in self.features
        ]

    def _value(self, f: str, v: object, row: int) -> object:
        if v is None:
            if f in self.nullable:
                return None
            raise InputError(f"row {row}: field '{f}' is null; it is required", field=f)
        if f in self.numeric:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise InputError(
                    f"row {row}: field '{f}' must be a number, got {type(v).__name__} {v!r}",
                    field=f,
                )
            try:
                x = float(v)
            except OverflowError:
                raise InputError(
                    f"row {row}: field '{f}' is too large for a 64-bit float", field=f
                ) from None
            if not math.isfinite(x):
                if math.isnan(x) and f in self.nullable:
                    return None
                raise InputError(f"row {row}: field '{f}' is {v}; send a finite number", field=f)
            return x
        if not isinstance(v, str):
            raise InputError(
                f"row {row}: field '{f}' must be a string, got {type(v).__name__} {v!r}", field=f
            )
        return v

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
                        f"row {i}: unknown field '{unknown[0]}'; the model takes "
                        f"{', '.join(self.features)}",
                        field=unknown[0],
                    )
                raise InputError(f"row {i}: missing field '{missing[0]}'", field=missing[0])
        for f in self.features:
            out[f] = self._column(f, [rec[f] for rec in records])
        return out

    def _column(self, f: str, values: list) -> list:
        """Check one column; the common all-valid case costs one pass over the types.
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
                    f"unknown input '{name}'; the model takes {', '.join(self.features)}",
                    field=name,
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
