"""Drift with real Evidently: the library, and the drift_report asset through Dagster."""

import datetime as dt

import pandas as pd
import pytest

from mlops_assets.demo.simulator import simulate_batch
from mlops_assets.monitoring.drift import DriftInputError, compute_drift, is_drifted
from mlops_assets.specs.model import get_spec


def _days(spec, start, n, drift="none", rows=300):
    return pd.concat(
        [
            simulate_batch(spec.simulator, start + dt.timedelta(days=i), rows=rows, drift=drift)
            for i in range(n)
        ]
    )


def test_covariate_shift_is_detected_and_a_stable_world_is_not():
    spec = get_spec("churn")
    reference = _days(spec, dt.date(2026, 11, 1), 3)
    stable = compute_drift(reference, _days(spec, dt.date(2026, 11, 10), 1, rows=400), spec, False)
    shifted = compute_drift(
        reference, _days(spec, dt.date(2026, 11, 10), 1, "covariate_shift", 400), spec, True
    )
    assert stable.drift_share < 0.5
    assert shifted.drift_share >= 0.5
    assert {c.column for c in shifted.features if c.drifted} >= {"plan", "monthly_charges"}
    assert "<html" in shifted.html.lower()
    assert "| plan |" in shifted.table()


def test_method_decides_the_direction():
    assert is_drifted("K-S p_value", 0.01, 0.05)
    assert not is_drifted("K-S p_value", 0.2, 0.05)
    assert is_drifted("Wasserstein distance (normed)", 0.2, 0.1)
    assert not is_drifted("Jensen-Shannon distance", 0.05, 0.1)


@pytest.mark.parametrize(
    ("current", "message"),
    [
        (pd.DataFrame(), "empty"),
        ("drop_column", "lacks feature columns \\['region'\\]"),
        ("all_nan", "only missing values"),
    ],
)
def test_bad_windows_are_explained(current, message):
    spec = get_spec("churn")
    reference = _days(spec, dt.date(2026, 11, 1), 1)
    if isinstance(current, str):
        frame = _days(spec, dt.date(2026, 11, 5), 1)
        current = (
            frame.drop(columns=["region"])
            if current == "drop_column"
            else frame.assign(tenure_months=float("nan"))
        )
    with pytest.raises(DriftInputError, match=message):
        compute_drift(reference, current, spec, False)


def test_the_verdict_warns_then_fails_by_drifted_share():
    from mlops_assets.monitoring.drift import ColumnDrift, DriftResult, judge

    def result(drifted: int) -> DriftResult:
        columns = [ColumnDrift(f"c{i}", "K-S p_value", 0.01, 0.05, i < drifted) for i in range(4)]
        return DriftResult(columns, reference_rows=100, current_rows=100)

    calm, warn, error = (judge(result(n), 0.3, 0.6) for n in (1, 2, 3))
    assert calm.passed and not calm.error and calm.drifted == ["c0"]
    assert not warn.passed and not warn.error and warn.description.startswith("2 of 4")
    assert not error.passed and error.error
    assert error.description.startswith("3 of 4 features drifted (share 75%; warn at 30%")
    assert error.description.endswith(": c0, c1, c2")
