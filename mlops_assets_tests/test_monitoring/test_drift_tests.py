"""Evidently's own tests decide drift: per column (PASS/FAIL of ValueDrift's test) and for the
dataset (DriftedColumnsCount and its drifted-share test), over the features only; the model's
answer is tested on its own."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlops_assets.demo.simulator import simulate_batch
from mlops_assets.monitoring.drift import PREDICTION, compute_drift, is_drifted, judge
from mlops_assets.specs.model import get_spec

SPEC = get_spec("churn")


def _days(start: dt.date, n: int, drift: str = "none", rows: int = 300) -> pd.DataFrame:
    return pd.concat(
        [
            simulate_batch(SPEC.simulator, start + dt.timedelta(days=i), rows=rows, drift=drift)
            for i in range(n)
        ]
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    ref = _days(dt.date(2026, 11, 1), 3)
    ref[PREDICTION] = np.random.default_rng(0).uniform(size=len(ref))
    return ref


def test_the_verdicts_are_evidentlys_tests_and_the_share_is_its_count(reference):
    current = _days(dt.date(2026, 11, 10), 1, "covariate_shift", 400)
    current[PREDICTION] = np.random.default_rng(1).uniform(size=len(current))
    result = compute_drift(reference, current, SPEC, html=False)

    assert [c.column for c in result.features] == list(SPEC.features)
    assert result.dataset is not None
    drifted = [c.column for c in result.features if c.drifted]
    assert result.dataset.count == len(drifted) == result.drifted_count
    assert result.drift_share == pytest.approx(len(drifted) / len(SPEC.features))
    assert {"plan", "monthly_charges"} <= set(drifted)
    assert result.dataset.threshold == 0.5 and result.dataset.drifted  # share >= 0.5 fails
    for c in result.columns:  # each test's verdict agrees with its method's direction
        assert c.drifted == is_drifted(c.method, c.score, c.threshold), c


def test_the_prediction_is_tested_on_its_own_and_never_counted_in_the_share(reference):
    current = _days(dt.date(2026, 11, 10), 1, rows=400)  # the same world...
    # ...but the model answers very differently (uniform → squared: mass moves to 0)
    current[PREDICTION] = np.random.default_rng(1).uniform(size=len(current)) ** 3
    result = compute_drift(reference, current, SPEC, html=False)
    without = compute_drift(reference.drop(columns=[PREDICTION]), current, SPEC, html=False)

    assert result.prediction is not None and result.prediction.drifted
    assert result.prediction.method and result.prediction.threshold > 0
    assert PREDICTION not in [c.column for c in result.features]
    assert result.dataset is not None and without.dataset is not None
    assert result.dataset.share == without.dataset.share < 0.5  # the answer changes nothing
    assert without.prediction is None  # an answer only one side has is not compared
    verdict = judge(result, warn_share=0.3, error_share=0.5)
    assert verdict.passed and PREDICTION not in verdict.drifted


@pytest.mark.parametrize(("threshold", "fails"), [(0.99, False), (0.1, True)])
def test_the_dataset_test_fails_at_the_share_asked_for(reference, threshold, fails):
    current = _days(dt.date(2026, 11, 10), 1, "covariate_shift", 400)
    result = compute_drift(reference, current, SPEC, html=False, drift_share=threshold)
    assert result.dataset is not None
    assert result.dataset.threshold == threshold
    assert result.dataset.drifted is fails
    assert 0.1 <= result.dataset.share < 0.99
