"""The schema of a model spec, validated with pydantic so a bad spec names its field."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SPECS_DIR = Path(__file__).parent
NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(_Strict):
    """One column of a dataset and its quality rules."""

    dtype: Literal["int", "float", "string", "category", "date"]
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    allowed: tuple[str | int, ...] | None = Field(
        default=None, description="the only values allowed (categories, or 0/1 labels)"
    )

    @model_validator(mode="after")
    def _rules_fit_the_dtype(self) -> ColumnSpec:
        if (self.min is not None or self.max is not None) and self.dtype not in ("int", "float"):
            raise ValueError(f"min/max apply to int and float columns, not {self.dtype}")
        if self.allowed is not None and self.dtype in ("float", "date"):
            raise ValueError(f"allowed values apply to int, string and category, not {self.dtype}")
        return self


class DatasetSpec(_Strict):
    """Where a model's data lives in the versioned store and what it must look like."""

    repository: str = Field(description="lakeFS repository (one per dataset)")
    prefix: str = Field(description="object prefix of the batch files, e.g. 'batches/'")
    key: str = Field(description="column that identifies a row; must be unique")
    timestamp: str = Field(description="column with the event date of a row")
    min_rows: int = Field(default=1, ge=1, description="fewest rows the dataset may have")
    columns: dict[str, ColumnSpec]

    @model_validator(mode="after")
    def _key_and_timestamp_are_columns(self) -> DatasetSpec:
        for role in ("key", "timestamp"):
            if getattr(self, role) not in self.columns:
                raise ValueError(f"{role} {getattr(self, role)!r} is not one of the columns")
        if not self.prefix.endswith("/"):
            raise ValueError(f"prefix {self.prefix!r} must end with '/'")
        return self


class SplitSpec(_Strict):
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 42


class ModelSpec(_Strict):
    """A model: its data, target, features and task."""

    name: str
    description: str
    task: Literal["classification", "regression"]
    dataset: DatasetSpec
    target: str
    features: tuple[str, ...]
    split: SplitSpec = SplitSpec()
    simulator: str | None = Field(
        default=None, description="name of the demo-data generator, if this spec has one"
    )

    @model_validator(mode="after")
    def _columns_exist(self) -> ModelSpec:
        if not NAME.match(self.name):
            raise ValueError(f"name {self.name!r} must be lower_snake_case")
        cols = self.dataset.columns
        missing = [c for c in (self.target, *self.features) if c not in cols]
        if missing:
            raise ValueError(f"target/features {missing} are not columns of the dataset")
        if self.target in self.features:
            raise ValueError(f"target {self.target!r} must not also be a feature")
        return self

    @property
    def numeric_features(self) -> list[str]:
        cols = self.dataset.columns
        return [f for f in self.features if cols[f].dtype in ("int", "float")]

    @property
    def categorical_features(self) -> list[str]:
        cols = self.dataset.columns
        return [f for f in self.features if cols[f].dtype in ("category", "string")]


def load_spec_file(path: Path) -> ModelSpec:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"model spec {path}: not valid YAML: {e}") from None
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in e.errors()
        )
        raise ValueError(f"model spec {path}: {problems}") from None


@functools.cache
def _load(specs_dir: str) -> tuple[ModelSpec, ...]:
    files = sorted(Path(specs_dir).glob("*.yaml"))
    if not files:
        raise ValueError(f"no model specs (*.yaml) in {specs_dir}: add one, see README")
    specs = tuple(load_spec_file(f) for f in files)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"model spec names must be unique in {specs_dir}: {names}")
    return specs


def load_specs(specs_dir: str | None = None) -> tuple[ModelSpec, ...]:
    """All model specs, from ``$MLOPS_SPECS_DIR`` or the packaged folder."""
    return _load(str(specs_dir or os.environ.get("MLOPS_SPECS_DIR") or SPECS_DIR))


def get_spec(name: str, specs_dir: str | None = None) -> ModelSpec:
    specs = {s.name: s for s in load_specs(specs_dir)}
    if name not in specs:
        raise KeyError(f"no model spec named {name!r}; known: {', '.join(sorted(specs))}")
    return specs[name]
