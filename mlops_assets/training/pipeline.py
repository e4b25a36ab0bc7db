"""The scikit-learn Pipeline a spec describes: per-column preprocessing plus one estimator.

The estimator is a built-in name (random_forest, gradient_boosting, linear) or the import path
of any scikit-learn-compatible class with a free ``params`` mapping; the preprocessing of each
column is chosen in the spec's ``preprocessing`` section (see ``PreprocessingSpec``).
"""

from __future__ import annotations

from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from mlops_assets.specs import Hyperparameters, ModelSpec


def builtin_estimator(task: str, p: Hyperparameters):
    """A built-in estimator from the named hyperparameter fields (``params`` not applied)."""
    classify = task != "regression"  # classification and multiclass
    if p.estimator == "random_forest":
        cls = RandomForestClassifier if classify else RandomForestRegressor
        # n_jobs=1: results do not depend on it, and a step should not take every core.
        return cls(
            n_estimators=p.n_estimators,
            max_depth=p.max_depth,
            min_samples_leaf=p.min_samples_leaf,
            random_state=p.random_state,
            n_jobs=1,
        )
    if p.estimator == "gradient_boosting":
        cls = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        return cls(
            max_iter=p.n_estimators,
            max_depth=p.max_depth,
            min_samples_leaf=p.min_samples_leaf,
            learning_rate=p.learning_rate,
            early_stopping=False,  # early stopping draws a validation split: keep fit exact
            random_state=p.random_state,
        )
    if classify:
        return LogisticRegression(C=1.0 / p.l2, max_iter=2000, random_state=p.random_state)
    return Ridge(alpha=p.l2, random_state=p.random_state)


def _estimator(task: str, p: Hyperparameters):
    if p.is_builtin:
        est = builtin_estimator(task, p)
        return est.set_params(**p.params) if p.params else est
    from mlops_assets.specs.imports import check_params, estimator_class

    est = check_params(estimator_class(p.estimator), p.params, "model.params")
    # The spec's seed reaches every estimator that draws random numbers, unless params set it:
    # the same data and spec must give the same model (reproduction depends on it).
    if "random_state" in est.get_params(deep=False) and "random_state" not in p.params:
        est.set_params(random_state=p.random_state)
    return est


def _step(step: str, column: str) -> Any:
    """The transformer after imputation for one preprocessing choice."""
    if step == "scale":
        return StandardScaler()
    if step == "onehot":
        return OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    if step == "ordinal":
        # A category unseen at training becomes -1 instead of failing the request.
        return OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    from mlops_assets.specs.imports import build_transformer

    return build_transformer(step, f"preprocessing of column {column!r}")


# The default choices keep the group names (and so the pipelines) of earlier models.
_GROUP_NAMES = {("numeric", "scale"): "numeric", ("categorical", "onehot"): "categorical"}


def _groups(spec: ModelSpec) -> list[tuple[str, str, list[str]]]:
    """(kind, step, columns) for each distinct choice, in the order features first use it."""
    groups: dict[tuple[str, str], list[str]] = {}
    for kind, columns in (
        ("numeric", spec.numeric_features),
        ("categorical", spec.categorical_features),
    ):
        for col in columns:
            groups.setdefault((kind, spec.preprocessing_step(col)), []).append(col)
    return [(kind, step, cols) for (kind, step), cols in groups.items()]


def build_preprocessor(spec: ModelSpec) -> ColumnTransformer:
    """Impute every column, then the spec's step for it; columns that are no feature drop."""
    transformers = []
    for kind, step, columns in _groups(spec):
        if kind == "numeric":
            impute = SimpleImputer(strategy="median")
        else:
            impute = SimpleImputer(strategy="constant", fill_value="missing")
        steps: list[tuple[str, Any]] = [("impute", impute)]
        if step != "passthrough":
            steps.append(("scale" if kind == "numeric" else "encode", _step(step, columns[0])))
        name = _GROUP_NAMES.get((kind, step)) or f"{kind}_{step.rsplit('.', 1)[-1].lower()}"
        transformers.append((name, Pipeline(steps), columns))
    return ColumnTransformer(transformers, remainder="drop")


def build_pipeline(spec: ModelSpec, params: Hyperparameters) -> Pipeline:
    """The spec's preprocessing, then the estimator."""
    pre = build_preprocessor(spec)
    return Pipeline([("preprocess", pre), ("model", _estimator(spec.task, params))])


def _types(obj: Any, seen: set[int], out: set[str]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, (list, tuple)):
        for item in obj:
            _types(item, seen, out)
        return
    if isinstance(obj, dict):
        for item in obj.values():
            _types(item, seen, out)
        return
    if isinstance(obj, type):
        return
    kind = type(obj)
    if kind.__module__ == "builtins":
        return
    out.add(f"{kind.__module__}.{kind.__qualname__}")
    if hasattr(obj, "get_params"):
        try:
            for value in obj.get_params(deep=False).values():
                _types(value, seen, out)
        except Exception:  # an estimator whose get_params needs fitting: its own type is enough
            pass


def spec_types(spec: ModelSpec) -> frozenset[str]:
    """Every type in the pipeline built from the reviewed spec (its estimator, transformers and
    the classifier's threshold wrapper): what a model file of this spec may contain beyond the
    platform's fixed allow-list. Never taken from the file itself."""
    out: set[str] = set()
    _types(build_pipeline(spec, spec.model), set(), out)
    if spec.task != "regression":  # a binary classifier's threshold wrapper; harmless otherwise
        out.add("sklearn.model_selection._classification_threshold.FixedThresholdClassifier")
    return frozenset(out)


def fit_or_explain(model, x, y, spec: ModelSpec, params: Hyperparameters):
    """``model.fit(x, y)``; an estimator or transformer that fails to fit is reported naming the
    spec, its estimator and the exception, with what to do (the run fails before registering)."""
    from mlops_assets.training.train import TrainingError

    try:
        return model.fit(x, y)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0].rstrip(".")
        raise TrainingError(
            f"model {spec.name!r}: model.estimator {params.estimator!r} (params "
            f"{dict(params.params)!r}) failed to fit on {len(x)} row(s): {type(e).__name__}: "
            f"{first}. Check model.params and preprocessing in the spec (the estimator may need "
            "scaled or encoded inputs, or other parameters)"
        ) from e
