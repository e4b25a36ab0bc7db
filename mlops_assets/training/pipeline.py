"""The scikit-learn Pipeline a spec describes: preprocessing plus one estimator."""

from __future__ import annotations

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
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlops_assets.specs import Hyperparameters, ModelSpec


def _estimator(task: str, p: Hyperparameters):
    classify = task != "regression"  # binary and multiclass
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


def build_pipeline(spec: ModelSpec, params: Hyperparameters) -> Pipeline:
    """Impute and scale numeric features, one-hot encode categorical ones, then the estimator."""
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
            ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    pre = ColumnTransformer(
        [
            ("numeric", numeric, spec.numeric_features),
            ("categorical", categorical, spec.categorical_features),
        ],
        remainder="drop",
    )
    return Pipeline([("preprocess", pre), ("model", _estimator(spec.task, params))])
