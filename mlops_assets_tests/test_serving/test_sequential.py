"""The sequential canary analysis as plain functions: when it decides, and that its stated
error rates hold on simulated request streams (seeded, so the figures are the same each run)."""

import random

import pytest

from mlops_assets.serving.analysis import merge, slow_count
from mlops_assets.serving.sequential import (
    SLOW_MIN_REQUESTS,
    decide,
    error_test,
    slow_test,
)
from mlops_assets.serving.state import Window

LIMITS = {
    "max_error_rate": 0.01,
    "max_p95_ms": 200.0,
    "max_prediction_shift": 0.5,
    "false_promote_rate": 0.05,
    "false_rollback_rate": 0.05,
}
PROD = {"mean_prediction": 0.30}


def cand(n, errors=0, slow=0, mean=0.31):
    return {"requests": n, "errors": errors, "slow": slow, "mean_prediction": mean}


def test_a_clean_candidate_is_promoted_once_the_error_test_has_its_evidence():
    needed = error_test(0.01, 0.05, 0.05).needed()
    assert needed == 332  # log(20) / log(0.999 / 0.99), as the README says
    assert decide(cand(needed - 1), PROD, **LIMITS).decision == "undecided"
    verdict = decide(cand(needed), PROD, **LIMITS)
    assert verdict.decision == "promote", verdict.reason
    assert f"{needed} requests" in verdict.reason and "5% false-promote" in verdict.reason


def test_a_failing_candidate_is_rolled_back_after_two_failures_not_one():
    assert decide(cand(1, errors=1), PROD, **LIMITS).decision == "undecided"
    verdict = decide(cand(2, errors=2), PROD, **LIMITS)
    assert verdict.decision == "roll_back"
    assert "2 of 2 requests failed" in verdict.reason and "error rate" in verdict.reason


def test_one_early_failure_only_asks_for_more_evidence():
    assert decide(cand(332, errors=1), PROD, **LIMITS).decision == "undecided"
    assert decide(cand(600, errors=1), PROD, **LIMITS).decision == "promote"


def test_a_slow_candidate_is_rolled_back_but_not_on_one_early_burst():
    # a stall delays every request in flight at once: 4 slow among the first 10 is no verdict
    assert decide(cand(10, slow=4), PROD, **LIMITS).decision == "undecided"
    verdict = decide(cand(SLOW_MIN_REQUESTS, slow=SLOW_MIN_REQUESTS), PROD, **LIMITS)
    assert verdict.decision == "roll_back"
    assert "p95 latency is above 200 ms" in verdict.reason
    # a burst, then fast requests: it recovers and is promoted on the evidence
    assert decide(cand(400, slow=4), PROD, **LIMITS).decision == "promote"


def test_a_shifted_candidate_is_rolled_back_once_its_mean_is_measured():
    assert decide(cand(50, mean=0.9), PROD, **LIMITS).decision == "undecided"
    verdict = decide(cand(100, mean=0.9), PROD, **LIMITS)
    assert verdict.decision == "roll_back"
    assert "200% away from production's 0.3" in verdict.reason


def test_latency_unknown_never_promotes_on_errors_alone():
    c = cand(5000)
    c["slow"] = None  # a source that did not say how many were slow
    assert decide(c, PROD, **LIMITS).decision == "undecided"


@pytest.mark.parametrize(
    ("rate", "bound", "at_most"),
    [(0.01, "false promote", 0.05), (0.001, "false rollback", 0.05)],
)
def test_the_stated_error_rates_hold_on_simulated_streams(rate, bound, at_most):
    """Requests failing at the bad rate are promoted at most 5 % of the time; at the good rate
    rolled back at most 5 % of the time (Wald's bounds, checked by simulation)."""
    rng = random.Random(7)
    test = error_test(0.01, 0.05, 0.05)
    wrong = 0
    runs = 2000
    for _ in range(runs):
        n = k = 0
        verdict = "undecided"
        while verdict == "undecided" and n < 20000:
            n += 1
            k += rng.random() < rate
            verdict = test.verdict(n, k)
        wrong += verdict == ("good" if bound == "false promote" else "bad")
    assert wrong / runs <= at_most, f"{bound}: {wrong} of {runs}"


def test_slow_test_bounds():
    t = slow_test(0.05, 0.05)
    assert t.needed() == 97
    assert t.verdict(97, 0) == "good" and t.verdict(4, 4) == "bad"


def test_slow_requests_are_counted_from_the_replicas_windows_against_the_limit():
    a, b = Window(), Window()
    for ms in (3, 4, 150, 210, 900):
        a.record(ms / 1000, False, 0.3)
    for ms in (5, 199, 201):
        b.record(ms / 1000, False, 0.3)
    merged = merge([a.summary(), b.summary()])
    assert merged["requests"] == 8
    assert slow_count(merged, 200) == 3  # 210, 900 and 201 ms
    # a limit between bounds counts against the bound below it: never fewer slow than true
    assert slow_count(merged, 300) == 3  # 210, 201 (over the 200 ms bound) and 900
    assert slow_count(merged, 0.5) == 8  # under the smallest bound: all count as slow
    assert slow_count(merge([a.summary(), {"requests": 2}]), 200) is None  # one did not say
