"""The promotion gate as a pure function."""

import math

import pytest

from mlops_assets.training.gate import decide


@pytest.mark.parametrize(
    ("challenger", "champion", "promote", "phrase"),
    [
        (0.80, None, True, "no champion yet"),
        (0.65, None, False, "< floor"),
        (0.80, 0.80, True, "within 3%"),
        (0.777, 0.80, True, "within 3%"),  # 2.9% worse: tolerated
        (0.775, 0.80, False, "more than 3% worse"),  # 3.1% worse
        (0.90, 0.80, True, "within 3%"),
        (0.69, 0.70, False, "< floor"),  # within tolerance of the champion, but under the floor
        (math.nan, 0.80, False, "could not be computed"),
    ],
)
def test_higher_is_better(challenger, champion, promote, phrase):
    d = decide("roc_auc", challenger, champion, floor=0.7, tolerance=0.03)
    assert d.promote is promote
    assert phrase in d.reason
    assert ("passes" if promote else "refused") in d.reason


@pytest.mark.parametrize(
    ("challenger", "champion", "promote"),
    [(9.0, None, True), (21.0, None, False), (10.2, 10.0, True), (10.4, 10.0, False)],
)
def test_lower_is_better_errors(challenger, champion, promote):
    # rmse: the "floor" is the largest acceptable error; 3% worse means 3% larger.
    d = decide("rmse", challenger, champion, floor=20.0, tolerance=0.03)
    assert d.promote is promote
    if champion is not None and not promote:
        assert "needed <= 10.3000" in d.reason


def test_bar_is_the_stricter_of_floor_and_tolerance():
    assert decide("r2", 0.9, 0.95, floor=0.5, tolerance=0.03).bar == pytest.approx(0.9215)
    assert decide("r2", 0.9, 0.51, floor=0.5, tolerance=0.03).bar == pytest.approx(0.5)
    assert decide("r2", 0.9, None, floor=0.5, tolerance=0.03).bar == 0.5


def test_zero_tolerance_refuses_any_regression():
    assert not decide("f1", 0.7999, 0.8, floor=0.1, tolerance=0.0).promote
    assert decide("f1", 0.8, 0.8, floor=0.1, tolerance=0.0).promote


def test_a_champion_whose_score_is_nan_cannot_be_replaced_blindly():
    d = decide("roc_auc", 0.9, math.nan, floor=0.7, tolerance=0.03)
    assert not d.promote
    assert "champion roc_auc could not be computed" in d.reason


def test_negative_scores_use_the_magnitude_for_the_tolerance():
    # r2 can be negative: 3 % worse than -0.5 is -0.515, not -0.485
    assert decide("r2", -0.51, -0.5, floor=-1.0, tolerance=0.03).promote
    assert not decide("r2", -0.52, -0.5, floor=-1.0, tolerance=0.03).promote
