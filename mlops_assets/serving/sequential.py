"""Sequential canary analysis: decide as soon as the candidate's requests support promote or
roll back, at stated error rates, instead of after a fixed count. Plain library code.

Two of Wald's sequential probability ratio tests (SPRT), each on a yes/no outcome per request
the candidate answered, evaluated on the running counts every time the rollout reads them:

- **errors**: a request fails (5xx). Bad: the failure rate is ``max_error_rate`` or more.
  Good: it is a tenth of that or less.
- **slow**: a request takes longer than ``max_p95_ms``. Bad: 5 % or more do (the p95 is above
  the limit). Good: 2 % or fewer do.

After ``n`` requests with ``k`` outcomes, a test's log-likelihood ratio (good against bad) is
``k*log(p_good/p_bad) + (n-k)*log((1-p_good)/(1-p_bad))``. With ``alpha`` the false-promote rate
and ``beta`` the false-rollback rate (both 5 % by default), a test says *good* once the ratio
reaches ``log(1/alpha)`` and *bad* once it falls to ``log(beta)``: Wald's conservative bounds,
under which the error rates are at most ``alpha`` and ``beta`` exactly, not approximately (his
usual ``log((1-beta)/alpha)`` lets them reach ``alpha/(1-beta)``; seen in the tests' simulation).

- **Promote** once both tests say good and the mean prediction is within
  ``max_prediction_shift`` of production's (a sanity bound). A candidate whose true failure
  (or slow) rate is at the bad bound or worse is promoted with probability at most ``alpha``.
- **Roll back** as soon as either test says bad (two failures among the first requests do),
  or, once 100 requests are in, the mean prediction is out of bounds. Slowness comes in
  bursts (a stall delays every request in flight), so latency may say bad only from 40
  requests on.
- **Maximum window**: if ``window_requests`` are in (or the rollout's time is up) before the
  tests decide, the fixed-window rule decides on the point estimates, as a fixed-count canary
  does; the reason says so.

With the defaults (1 % errors, 200 ms, alpha = beta = 5 %) a clean candidate is promoted
after 332 requests; a candidate that always fails is rolled back after 2, one that is always
slow after 40. The false-rollback rate of the pair is at most ``2beta`` (either test may err).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# A good candidate errs at most this fraction of the limit; requests slower than the latency
# limit: bad at 5 % (the p95 is above it), good at 2 %.
GOOD_ERROR_FRACTION = 0.1
SLOW_BAD = 0.05
SLOW_GOOD = 0.02
SHIFT_MIN_REQUESTS = 100
# Slowness comes in bursts (a stall delays every request in flight at once), which the test's
# independence assumption ignores: latency may say "bad" only from this many requests on.
SLOW_MIN_REQUESTS = 40


@dataclass(frozen=True)
class Sprt:
    """Wald's test between a good and a bad rate of a yes/no outcome."""

    good: float
    bad: float
    false_promote: float
    false_rollback: float

    def llr(self, n: int, k: int) -> float:
        """Log-likelihood ratio, good against bad, of ``k`` outcomes in ``n`` trials."""
        return k * math.log(self.good / self.bad) + (n - k) * math.log(
            (1 - self.good) / (1 - self.bad)
        )

    def verdict(self, n: int, k: int) -> str:
        """``good``, ``bad`` or ``undecided``."""
        ratio = self.llr(n, k)
        if ratio >= -math.log(self.false_promote):
            return "good"
        if ratio <= math.log(self.false_rollback):
            return "bad"
        return "undecided"

    def needed(self) -> int:
        """Clean trials a fresh test needs to say good."""
        step = math.log((1 - self.good) / (1 - self.bad))
        return math.ceil(-math.log(self.false_promote) / step)


def error_test(max_error_rate: float, false_promote: float, false_rollback: float) -> Sprt:
    bad = min(max(max_error_rate, 1e-6), 0.5)
    return Sprt(bad * GOOD_ERROR_FRACTION, bad, false_promote, false_rollback)


def slow_test(false_promote: float, false_rollback: float) -> Sprt:
    return Sprt(SLOW_GOOD, SLOW_BAD, false_promote, false_rollback)


@dataclass(frozen=True)
class Verdict:
    decision: str  # promote | roll_back | undecided
    reason: str


def decide(
    cand: dict,
    prod: dict | None,
    *,
    max_error_rate: float,
    max_p95_ms: float,
    max_prediction_shift: float,
    false_promote_rate: float,
    false_rollback_rate: float,
) -> Verdict:
    """The sequential decision on the candidate's counts so far (``requests``, ``errors``,
    ``slow``: requests over ``max_p95_ms``, ``mean_prediction``), against production's mean."""
    n = int(cand.get("requests", 0))
    errors = int(cand.get("errors", 0))
    slow = cand.get("slow")  # None: the source did not say; latency stays undecided
    err = error_test(max_error_rate, false_promote_rate, false_rollback_rate).verdict(n, errors)
    lat = (
        "undecided"
        if slow is None
        else slow_test(false_promote_rate, false_rollback_rate).verdict(n, int(slow))
    )
    if err == "bad":
        return Verdict(
            "roll_back",
            f"sequential test: {errors} of {n} requests failed, evidence that the error rate "
            f"is {max_error_rate:.1%} or more",
        )
    if lat == "bad" and n >= SLOW_MIN_REQUESTS:
        return Verdict(
            "roll_back",
            f"sequential test: {slow} of {n} requests took over {max_p95_ms:g} ms, evidence "
            f"that the p95 latency is above {max_p95_ms:g} ms",
        )
    shift = prediction_shift(cand, prod)
    if shift is not None and shift > max_prediction_shift and n >= SHIFT_MIN_REQUESTS:
        return Verdict("roll_back", shift_reason(cand, prod, shift, max_prediction_shift))
    if err == "good" and lat == "good":
        if cand.get("mean_prediction") is None:
            return Verdict("roll_back", "candidate returned no predictions to check")
        if shift is not None and shift > max_prediction_shift:
            return Verdict("roll_back", shift_reason(cand, prod, shift, max_prediction_shift))
        return Verdict(
            "promote",
            f"sequential test: {n} requests, {errors} failed and {slow} over "
            f"{max_p95_ms:g} ms: failure rate below {max_error_rate:.1%} and p95 below "
            f"{max_p95_ms:g} ms at a {false_promote_rate:.0%} false-promote rate",
        )
    return Verdict("undecided", f"{n} requests so far: not enough evidence either way")


def prediction_shift(cand: dict, prod: dict | None) -> float | None:
    """Relative change of the mean prediction against production's, if both are known."""
    c_mean = cand.get("mean_prediction")
    p_mean = (prod or {}).get("mean_prediction")
    if c_mean is None or p_mean is None:
        return None
    return abs(c_mean - p_mean) / max(abs(p_mean), 1e-9)


def shift_reason(cand: dict, prod: dict | None, shift: float, allowed: float) -> str:
    return (
        f"candidate mean prediction {cand['mean_prediction']:.4g} is {shift:.0%} away from "
        f"production's {(prod or {})['mean_prediction']:.4g} (allowed {allowed:.0%})"
    )
