import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlops_assets.demo.simulator import DRIFTS, simulate_batch, to_csv_bytes
from mlops_assets.quality import audit_frame, parse_batch
from mlops_assets_tests.conftest import DAY0


def test_batches_are_deterministic(spec):
    a = simulate_batch(spec.simulator, DAY0, rows=200, seed=3)
    b = simulate_batch(spec.simulator, DAY0, rows=200, seed=3)
    pd.testing.assert_frame_equal(a, b)
    c = simulate_batch(spec.simulator, DAY0, rows=200, seed=4)
    assert not a.equals(c)


@pytest.mark.parametrize("drift", DRIFTS)
def test_every_scenario_satisfies_the_spec(spec, drift):
    df = simulate_batch(spec.simulator, DAY0, rows=300, drift=drift)
    parsed, problems = parse_batch("b.csv", to_csv_bytes(df), spec.dataset)
    assert problems == []
    assert audit_frame(parsed, spec.dataset) == []
    assert set(df.columns) == set(spec.dataset.columns)


def test_numeric_and_categorical_features_and_learnable_target(spec):
    df = simulate_batch(spec.simulator, DAY0, rows=3000)
    assert spec.numeric_features and spec.categorical_features
    for col in spec.categorical_features:
        assert df[col].nunique() >= 2
    # The target depends on the features: a least-squares fit explains much of it.
    num = df[spec.numeric_features].fillna(df[spec.numeric_features].mean())
    cats = pd.get_dummies(df[spec.categorical_features], drop_first=True)
    x = np.column_stack([num.to_numpy(float), cats.to_numpy(float), np.ones(len(df))])
    y = df[spec.target].to_numpy(float)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    score = x @ coef
    if spec.task == "regression":
        r2 = 1 - ((y - score) ** 2).sum() / ((y - y.mean()) ** 2).sum()
        assert r2 > 0.5
    else:
        # ROC AUC of the linear score (Mann-Whitney): well above chance (0.5).
        ranks = pd.Series(score).rank().to_numpy()
        pos = y == 1
        auc = (ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum())
        assert 0.05 < y.mean() < 0.95
        assert auc > 0.7


def test_covariate_shift_moves_feature_distributions(spec):
    base = simulate_batch(spec.simulator, DAY0, rows=3000)
    shifted = simulate_batch(spec.simulator, DAY0, rows=3000, drift="covariate_shift")
    moved = [
        c
        for c in spec.numeric_features
        if abs(shifted[c].mean() - base[c].mean()) > 0.5 * base[c].std()
    ]
    assert moved, "covariate shift should move at least one numeric feature by > 0.5 sd"


def test_concept_drift_changes_the_relationship_not_the_inputs(spec):
    base = simulate_batch(spec.simulator, DAY0, rows=3000)
    drifted = simulate_batch(spec.simulator, DAY0, rows=3000, drift="concept_drift")
    f = spec.numeric_features[0]
    assert abs(drifted[f].mean() - base[f].mean()) < 0.2 * base[f].std()
    col = "tenure_months" if spec.name == "churn" else "price"
    corr_base = base[col].corr(base[spec.target])
    corr_drift = drifted[col].corr(drifted[spec.target])
    assert np.sign(corr_base) != np.sign(corr_drift) or abs(corr_base - corr_drift) > 0.2


def test_seasonality_changes_a_feature_over_the_year():
    summer = simulate_batch("demand", dt.date(2026, 7, 1), rows=2000)
    winter = simulate_batch("demand", dt.date(2026, 1, 1), rows=2000)
    assert summer["temperature_c"].mean() - winter["temperature_c"].mean() > 10


def test_unknown_simulator_and_scenario_are_named():
    with pytest.raises(ValueError, match="no demo-data simulator 'nope'"):
        simulate_batch("nope", DAY0)
    with pytest.raises(ValueError, match="unknown drift scenario 'sideways'"):
        simulate_batch("churn", DAY0, drift="sideways")
