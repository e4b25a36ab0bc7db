"""The schema of a model spec, validated with pydantic so a bad spec names its field."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

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

    @field_validator("allowed", mode="before")
    @classmethod
    def _no_yaml_booleans(cls, value):
        # YAML reads an unquoted yes/no/true/false as a boolean, which would become 1/0 here
        # and never match the text "yes" in the data.
        if isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value):
            raise ValueError(
                "holds a YAML boolean (an unquoted yes, no, true, false, on or off): quote the "
                "values as they are written in the data, e.g. allowed: ['yes', 'no']"
            )
        return value

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


BUILTIN_ESTIMATORS = ("random_forest", "gradient_boosting", "linear")


class Hyperparameters(_Strict):
    """How the estimator is built and fit. Each estimator uses the fields that apply to it."""

    estimator: str = Field(
        default="random_forest",
        description=(
            "random_forest (RandomForest), gradient_boosting (HistGradientBoosting) or linear "
            "(LogisticRegression for classification, Ridge for regression), or the import path "
            "of any scikit-learn-compatible estimator class, e.g. "
            "sklearn.ensemble.ExtraTreesClassifier (then params sets its arguments)"
        ),
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "keyword arguments of the estimator, checked against its get_params(); for a "
            "built-in name they override what the fields above set"
        ),
    )
    n_estimators: int = Field(
        default=200, ge=1, le=5000, description="trees (random_forest) or boosting rounds"
    )
    max_depth: int | None = Field(
        default=None, ge=1, le=100, description="deepest a tree may grow; empty: unlimited"
    )
    min_samples_leaf: int = Field(
        default=1, ge=1, le=10000, description="fewest training rows in a tree leaf"
    )
    learning_rate: float = Field(
        default=0.1, gt=0, le=1, description="gradient_boosting: shrinkage per round"
    )
    l2: float = Field(default=1.0, gt=0, le=1e6, description="linear: L2 penalty (alpha; C = 1/l2)")
    random_state: int = Field(default=0, ge=0, description="seed of every random choice in fit")

    @field_validator("params", mode="before")
    @classmethod
    def _json_text_is_a_mapping(cls, value):
        # `mlflow run -P params=...` and a launchpad text field hand the mapping over as JSON.
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as e:
                raise ValueError(f"not a JSON object: {e}") from None
        return value

    @field_validator("estimator")
    @classmethod
    def _estimator_is_known(cls, value: str) -> str:
        if value in BUILTIN_ESTIMATORS:
            return value
        from mlops_assets.specs.imports import estimator_class, is_import_path

        if not is_import_path(value):
            raise ValueError(
                f"{value!r} is neither a built-in estimator ({', '.join(BUILTIN_ESTIMATORS)}) "
                "nor an import path such as sklearn.ensemble.ExtraTreesClassifier"
            )
        estimator_class(value)
        return value

    @field_validator("params")
    @classmethod
    def _params_fit_the_estimator(cls, value: dict[str, Any], info: ValidationInfo):
        estimator = info.data.get("estimator")
        if value and estimator and estimator not in BUILTIN_ESTIMATORS:
            from mlops_assets.specs.imports import check_params, estimator_class

            check_params(estimator_class(estimator), value, f"params of {estimator}")
        return value

    @property
    def is_builtin(self) -> bool:
        return self.estimator in BUILTIN_ESTIMATORS


NUMERIC_STEPS = ("scale", "passthrough")
CATEGORICAL_STEPS = ("onehot", "ordinal", "passthrough")


class PreprocessingSpec(_Strict):
    """How each feature column is prepared before the estimator. Missing values are always
    imputed first (median for numbers, the constant 'missing' for categories); then the chosen
    step: ``scale`` (StandardScaler) or ``passthrough`` for numbers; ``onehot``, ``ordinal`` or
    ``passthrough`` for categories; or the import path of a transformer factory for either
    (``sklearn.preprocessing.RobustScaler``)."""

    numeric: str = Field(
        default="scale", description="step for every numeric feature: scale, passthrough or a path"
    )
    categorical: str = Field(
        default="onehot",
        description="step for every categorical feature: onehot, ordinal, passthrough or a path",
    )
    columns: dict[str, str] = Field(
        default_factory=dict, description="a step for one column, overriding its kind's default"
    )


LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})
TASK_METRICS = {
    "classification": ("accuracy", "f1", "roc_auc"),
    # more than two classes: macro-averaged F1 and one-vs-rest ROC AUC weigh every class alike
    "multiclass": ("accuracy", "f1_macro", "roc_auc_ovr", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}


class EvaluationSpec(_Strict):
    """The promotion gate: which holdout metric decides, its absolute bar and the tolerance."""

    metric: str = Field(description="holdout metric that decides promotion, e.g. roc_auc or r2")
    floor: float = Field(
        description=(
            "absolute bar a challenger must clear: the lowest acceptable value for metrics "
            "where higher is better (roc_auc, r2, ...), the highest for errors (rmse, mae)"
        )
    )
    tolerance: float = Field(
        default=0.03,
        ge=0,
        lt=1,
        description="how much worse than the champion a challenger may be, relative (0.03 = 3%)",
    )

    @property
    def higher_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER


ThresholdMetric = Literal["f1", "f2", "balanced_accuracy", "accuracy", "matthews"]


class ThresholdSpec(_Strict):
    """How a classifier turns P(positive) into a label. Part of the model: it is chosen at
    training, stored in the model and its registered version, and used by the gate's label
    metrics, the inference server's labels and live performance.

    In YAML: ``threshold: 0.5`` (a fixed value) or ``threshold: {maximize: f1}`` (the value that
    maximises the metric on a validation slice of the train split, never on the holdout).
    """

    fixed: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="answer the positive class when P(positive) >= this value",
    )
    maximize: ThresholdMetric | None = Field(
        default=None,
        description=(
            "choose the threshold that maximises this metric on a validation slice of the train "
            "split: f1, f2 (recall weighs double), balanced_accuracy, accuracy or matthews"
        ),
    )
    validation_fraction: float = Field(
        default=0.25,
        ge=0.05,
        le=0.5,
        description="share of the train split held out to choose the threshold (maximize only)",
    )

    @model_validator(mode="before")
    @classmethod
    def _a_number_is_fixed(cls, value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {"fixed": value}
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> ThresholdSpec:
        if self.fixed is not None and self.maximize is not None:
            raise ValueError("give either a fixed threshold or a metric to maximize, not both")
        return self

    @property
    def rule(self) -> str:
        """How the threshold is chosen, in words (logged with the model)."""
        if self.maximize is not None:
            return (
                f"maximize {self.maximize} on a {self.validation_fraction:.0%} validation slice "
                "of the train split"
            )
        return f"fixed at {self.value}"

    @property
    def value(self) -> float:
        """The fixed threshold (0.5 when the spec says nothing)."""
        return 0.5 if self.fixed is None else self.fixed


class FreshnessSpec(_Strict):
    """How old the model and the dataset may get before they count as stale (Dagster
    freshness policies; a stale model is retrained by the ``<spec>_stale_model`` sensor)."""

    model_max_age_hours: float = Field(
        default=168, gt=0, description="hours after the last training that the model fails"
    )
    dataset_max_age_hours: float = Field(
        default=48, gt=0, description="hours after the last snapshot that the dataset fails"
    )
    warn_fraction: float = Field(
        default=0.75, gt=0, le=1, description="share of the max age after which it warns"
    )


class ServingSpec(_Strict):
    """How the inference server treats this model's requests."""

    input_rules: Literal["reject", "flag"] = Field(
        default="reject",
        description=(
            "the dataset's rules for a feature (min/max, allowed values, nullability, and a "
            "number within float32 range, as the trees cast it): 'reject' answers a row that "
            "breaks one with a 422 naming the field and row; 'flag' serves it and counts it in "
            "mlops_input_rule_violations_total"
        ),
    )


class ModelSpec(_Strict):
    """A model: its data, target, features, task, estimator and promotion gate."""

    name: str
    description: str
    task: Literal["classification", "multiclass", "regression"] = Field(
        description=(
            "classification (two classes: 0/1, or two labels such as yes/no with "
            "positive_class naming one), multiclass (more than two classes: the model answers "
            "the class and P(class) for each) or regression"
        )
    )
    dataset: DatasetSpec
    target: str
    positive_class: str | int | None = Field(
        default=None,
        description=(
            "classification: the target value that counts as positive; the model answers "
            "P(positive), and f1, roc_auc and the threshold are computed for it. Default 1, "
            "for a 0/1 target; any other target lists its two labels in the column's allowed "
            "values and names one here"
        ),
    )
    features: tuple[str, ...]
    split: SplitSpec = SplitSpec()
    simulator: str | None = Field(
        default=None, description="name of the demo-data generator, if this spec has one"
    )
    registered_model: str | None = Field(
        default=None, description="name in the MLflow model registry; default: the spec's name"
    )
    model: Hyperparameters = Hyperparameters()
    preprocessing: PreprocessingSpec = PreprocessingSpec()
    evaluation: EvaluationSpec
    threshold: ThresholdSpec = Field(
        default=ThresholdSpec(),
        description="classification: how P(positive) becomes a label (default: fixed at 0.5)",
    )
    freshness: FreshnessSpec = FreshnessSpec()
    serving: ServingSpec = ServingSpec()

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
        if self.evaluation.metric not in TASK_METRICS[self.task]:
            raise ValueError(
                f"evaluation.metric {self.evaluation.metric!r} is not a {self.task} metric: use "
                f"one of {', '.join(TASK_METRICS[self.task])}"
            )
        if self.task != "classification" and self.threshold != ThresholdSpec():
            raise ValueError(
                f"threshold applies to classification only (two classes), not {self.task}: "
                "remove it from the spec"
            )
        self._check_positive_class()
        if self.task == "multiclass" and cols[self.target].dtype in ("float", "date"):
            raise ValueError(
                f"target {self.target!r} of a multiclass model must be an int, string or "
                f"category column, not {cols[self.target].dtype}"
            )
        self._check_preprocessing()
        if not self.model.is_builtin or self.model.params:
            self._check_estimator()
        return self

    @field_validator("positive_class", mode="before")
    @classmethod
    def _positive_class_is_not_a_yaml_boolean(cls, value):
        if isinstance(value, bool):
            raise ValueError(
                f"got the YAML boolean {str(value).lower()} (an unquoted yes, no, true, false, "
                "on or off): quote the label as it is written in the data, e.g. "
                "positive_class: 'yes'"
            )
        return value

    def _check_positive_class(self) -> None:
        """A binary target's two labels and which one is positive: 1 of a 0/1 target unless
        ``positive_class`` says otherwise; any other target lists its labels and names one."""
        target = self.dataset.columns[self.target]
        where = f"dataset.columns.{self.target}.allowed"
        if self.task != "classification":
            if self.positive_class is not None:
                raise ValueError(
                    f"positive_class applies to classification only (two classes), not "
                    f"{self.task}: remove it from the spec"
                )
            return
        if self.positive_class is not None and target.dtype in ("float", "date"):
            raise ValueError(
                f"positive_class {self.positive_class!r}: target {self.target!r} is a "
                f"{target.dtype} column; labels belong in an int, string or category column"
            )
        labels = None if target.allowed is None else [str(v) for v in target.allowed]
        if labels is not None and len(set(labels)) != 2:
            raise ValueError(
                f"{where}: a classification target has two classes, {self.target!r} allows "
                f"{len(set(labels))} ({', '.join(labels)}): list its two labels, or set task: "
                "multiclass"
            )
        if self.positive_class is None:
            if labels is not None and set(labels) != {"0", "1"}:
                raise ValueError(
                    f"positive_class: target {self.target!r} has the labels {labels}, not 0/1: "
                    "name the one that counts as positive (the event the model predicts), e.g. "
                    f"positive_class: {labels[-1]!r}"
                )
            if labels is None and target.dtype != "int":
                raise ValueError(
                    f"positive_class: target {self.target!r} is a {target.dtype} column: list "
                    f"its two labels ({where}: [...]) and name the positive one "
                    "(positive_class: ...)"
                )
            return
        if labels is None:
            raise ValueError(
                f"positive_class {self.positive_class!r}: list the target's two labels "
                f"({where}: [...]) so the other one is known"
            )
        if str(self.positive_class) not in labels:
            raise ValueError(
                f"positive_class {self.positive_class!r} is not one of the labels of target "
                f"{self.target!r}, {labels} ({where}): name one of them"
            )
        if target.dtype == "int" and not str(self.positive_class).lstrip("-").isdigit():
            raise ValueError(
                f"positive_class {self.positive_class!r}: target {self.target!r} is an int "
                "column, so the positive class is one of its numbers"
            )

    @property
    def positive_label(self) -> str | int:
        """A classifier's positive class, typed as the target is (features.build_features):
        an int for an int target, else text. 1 when the spec names none (a 0/1 target)."""
        if self.positive_class is None:
            return 1
        if self.dataset.columns[self.target].dtype == "int":
            return int(self.positive_class)
        return str(self.positive_class)

    @property
    def negative_label(self) -> str | int:
        """A classifier's other class: 0 of a 0/1 target, else the other allowed label."""
        allowed = self.dataset.columns[self.target].allowed
        if self.positive_class is None or allowed is None:
            return 0 if self.positive_label == 1 else 1
        (other,) = [v for v in allowed if str(v) != str(self.positive_class)]
        return int(other) if self.dataset.columns[self.target].dtype == "int" else str(other)

    def _check_preprocessing(self) -> None:
        pre = self.preprocessing
        for col in pre.columns:
            if col not in self.features:
                raise ValueError(
                    f"preprocessing.columns: {col!r} is not a feature: use one of "
                    f"{', '.join(self.features)}"
                )
        for col in self.features:
            self.preprocessing_step(col)  # raises for a step the column's kind lacks
        from mlops_assets.specs.imports import is_import_path, transformer_factory

        for where, step in [
            ("preprocessing.numeric", pre.numeric),
            ("preprocessing.categorical", pre.categorical),
            *((f"preprocessing.columns.{c}", s) for c, s in pre.columns.items()),
        ]:
            if is_import_path(step):
                transformer_factory(step, where)

    def preprocessing_step(self, column: str) -> str:
        """The step that prepares ``column``: scale, onehot, ordinal, passthrough or a path."""
        from mlops_assets.specs.imports import is_import_path

        numeric = self.dataset.columns[column].dtype in ("int", "float")
        step = self.preprocessing.columns.get(
            column, self.preprocessing.numeric if numeric else self.preprocessing.categorical
        )
        choices = NUMERIC_STEPS if numeric else CATEGORICAL_STEPS
        if step not in choices and not is_import_path(step):
            kind = "numeric" if numeric else "categorical"
            where = (
                f"preprocessing.columns.{column}"
                if column in self.preprocessing.columns
                else f"preprocessing.{kind}"
            )
            raise ValueError(
                f"{where}: {step!r} does not apply to the {kind} feature {column!r}: use one of "
                f"{', '.join(choices)} or a transformer's import path"
            )
        return step

    def _check_estimator(self) -> None:
        """The estimator (built-in with params, or by path) is built once with its params, and
        must suit the task: a classifier answers probabilities, a regressor values."""
        from mlops_assets.specs.imports import check_params, estimator_class

        m = self.model
        if m.is_builtin:
            from mlops_assets.training.pipeline import builtin_estimator

            base = builtin_estimator(self.task, m.model_copy(update={"params": {}}))
            check_params(type(base), m.params, f"model.params of {m.estimator}")
            return
        instance = check_params(estimator_class(m.estimator), m.params, "model.params")
        classify = self.task != "regression"
        kind = getattr(instance, "_estimator_type", None)
        if kind is None:
            try:
                kind = instance.__sklearn_tags__().estimator_type
            except Exception:
                kind = None
        expected = "classifier" if classify else "regressor"
        if kind is not None and kind != expected:
            raise ValueError(
                f"model.estimator {m.estimator!r} is a {kind}, but task is {self.task}: name a "
                f"{expected}"
            )
        if classify and not hasattr(instance, "predict_proba"):
            raise ValueError(
                f"model.estimator {m.estimator!r} with these params has no predict_proba: a "
                "classifier must answer probabilities (for sklearn.svm.SVC set params: "
                "{probability: true}, or wrap it in sklearn.calibration.CalibratedClassifierCV)"
            )

    def digest(self, exclude: set[str] | None = None) -> str:
        """A short digest of the spec (without the ``exclude`` sections): part of code versions.
        The serving section never counts: it changes how requests are checked, not what data
        or model is built, so changing it must not make every asset look out of date."""
        # A spec that names no positive class digests as it did before the field existed, so
        # adding it left every 0/1 model's code version (and what looks out of date) alone.
        unset = {"positive_class"} if self.positive_class is None else set()
        text = self.model_dump_json(exclude={*(exclude or ()), "serving", *unset})
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    @property
    def model_name(self) -> str:
        """The registered model's name in MLflow."""
        return self.registered_model or self.name

    @property
    def metrics(self) -> tuple[str, ...]:
        return TASK_METRICS[self.task]

    @property
    def numeric_features(self) -> list[str]:
        cols = self.dataset.columns
        return [f for f in self.features if cols[f].dtype in ("int", "float")]

    @property
    def categorical_features(self) -> list[str]:
        cols = self.dataset.columns
        return [f for f in self.features if cols[f].dtype in ("category", "string")]


def check_estimator_override(spec: ModelSpec, estimator: str) -> None:
    """Run config (the launchpad) may choose a built-in estimator or the spec's own; an import
    path only through the reviewed spec file: importing a module runs its code, and the model's
    skops trust list is built from the spec. Checked before the config is validated (which
    would import the path)."""
    if estimator in BUILTIN_ESTIMATORS or estimator == spec.model.estimator:
        return
    raise ValueError(
        f"field 'estimator': {estimator!r} is neither the spec's estimator "
        f"({spec.model.estimator!r}) nor a built-in ({', '.join(BUILTIN_ESTIMATORS)}): an "
        "estimator by import path is chosen in the reviewed spec file, not in run config"
    )


def validation_problems(error: ValidationError, kind: str = "") -> str:
    """Every problem pydantic found, each naming its field: the one formatter of validation
    errors. With ``kind`` (``"field"`` for run config, ``"parameter"`` for ``mlflow run``),
    each problem also shows the value it got."""
    parts = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if kind:
            parts.append(f"{kind} '{where}': {err['msg']} (got {err.get('input')!r})")
        else:
            parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def load_spec_file(path: Path) -> ModelSpec:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"model spec {path}: not valid YAML: {e}") from None
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as e:
        raise ValueError(f"model spec {path}: {validation_problems(e)}") from None


@functools.cache
def _load(specs_dir: str) -> tuple[ModelSpec, ...]:
    # several folders may be given, separated by os.pathsep (an opt-in example beside yours)
    folders = [d for d in specs_dir.split(os.pathsep) if d]
    files = [f for d in folders for f in sorted(Path(d).glob("*.yaml"))]
    if not files:
        raise ValueError(f"no model specs (*.yaml) in {specs_dir}: add one, see README")
    specs = tuple(load_spec_file(f) for f in files)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"model spec names must be unique in {specs_dir}: {names}")
    return specs


def forget_loaded_specs() -> None:
    """Read the spec files again on the next load (after ``mlops init`` wrote one)."""
    _load.cache_clear()


def load_specs(specs_dir: str | None = None) -> tuple[ModelSpec, ...]:
    """All model specs, from ``$MLOPS_SPECS_DIR`` or the packaged folder."""
    from mlops_assets.settings import Settings

    return _load(str(specs_dir or Settings.from_env().specs_dir or SPECS_DIR))


def get_spec(name: str, specs_dir: str | None = None) -> ModelSpec:
    specs = {s.name: s for s in load_specs(specs_dir)}
    if name not in specs:
        raise KeyError(f"no model spec named {name!r}; known: {', '.join(sorted(specs))}")
    return specs[name]
