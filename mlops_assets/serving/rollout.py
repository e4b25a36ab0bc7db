"""Safe rollout of a new model version to the inference server: canary or blue-green, with an
automatic decision from what the candidate actually served. Plain library code, no Dagster.

Canary: the candidate answers ``canary_weight`` of the requests. Blue-green: the candidate is
deployed beside production with no traffic, answers pinned smoke traffic, then takes all of it
in one switch (production stays loaded as the instant way back). Either way the candidate
must answer ``window_requests`` requests with an error rate, p95 latency and mean prediction
within bounds; then ``production`` moves to it (registry alias first, then the server), or the
server goes back to the old version and the alias is not touched.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mlops_assets.serving.client import ServingClient


@dataclass(frozen=True)
class Policy:
    strategy: str = "canary"
    canary_weight: float = 0.2
    window_requests: int = 200
    max_error_rate: float = 0.01
    max_p95_ms: float = 200.0
    max_prediction_shift: float = 0.5
    timeout_seconds: float = 120.0


@dataclass
class Result:
    decision: str  # promoted | rolled_back | already_serving | first_deployment
    reason: str
    candidate: str
    production_before: str | None
    candidate_stats: dict = field(default_factory=dict)
    production_stats: dict = field(default_factory=dict)
    strategy: str = "canary"


def judge(policy: Policy, cand: dict, prod: dict | None) -> tuple[bool, str]:
    """Promote only if the candidate served enough requests, few errors, fast enough, and
    predicts like production on the same traffic (a sanity bound, not a quality gate)."""
    n = cand.get("requests", 0)
    if n < policy.window_requests:
        return False, (
            f"candidate answered {n} of the {policy.window_requests} requests needed within "
            f"{policy.timeout_seconds:g}s; not enough evidence, rolled back"
        )
    if cand["error_rate"] > policy.max_error_rate:
        return False, (
            f"candidate error rate {cand['error_rate']:.1%} ({cand['errors']} of {n}) > "
            f"{policy.max_error_rate:.1%}"
        )
    if cand["p95_ms"] is not None and cand["p95_ms"] > policy.max_p95_ms:
        return False, f"candidate p95 latency {cand['p95_ms']:.1f} ms > {policy.max_p95_ms:g} ms"
    c_mean = cand.get("mean_prediction")
    p_mean = (prod or {}).get("mean_prediction")
    if c_mean is None:
        return False, "candidate returned no predictions to check"
    if p_mean is not None:
        shift = abs(c_mean - p_mean) / max(abs(p_mean), 1e-9)
        if shift > policy.max_prediction_shift:
            return False, (
                f"candidate mean prediction {c_mean:.4g} is {shift:.0%} away from production's "
                f"{p_mean:.4g} (allowed {policy.max_prediction_shift:.0%})"
            )
    return True, (
        f"candidate served {n} requests: error rate {cand['error_rate']:.1%}, p95 "
        f"{cand['p95_ms']:.1f} ms, mean prediction {c_mean:.4g}"
        + (f" (production {p_mean:.4g})" if p_mean is not None else "")
    )


def rollout(
    client: ServingClient,
    model: str,
    candidate: str,
    policy: Policy,
    promote_alias: Callable[[str], object],
    traffic: Callable[[str | None], contextlib.AbstractContextManager] | None = None,
    log: Callable[[str], None] = print,
) -> Result:
    """Roll ``candidate`` out on ``model``; ``promote_alias(version)`` moves the registry alias.

    ``traffic(pinned_version)`` (optional) returns a context manager that sends requests while
    the rollout watches (the demo replays the holdout; in production, real traffic flows).
    """
    before = client.deployment(model)
    production = before.get("production")
    if production == candidate:
        return Result(
            "already_serving",
            f"version {candidate} already serves",
            candidate,
            production,
            strategy=policy.strategy,
        )
    if production is None:
        promote_alias(candidate)
        client.deploy(model, production=candidate)
        return Result(
            "first_deployment",
            f"no version served yet: {candidate} now serves",
            candidate,
            None,
            strategy=policy.strategy,
        )

    client.reset_stats(model)
    if policy.strategy == "blue_green":
        client.deploy(
            model, production=production, candidate=candidate, weight=0.0, mode="blue_green"
        )
        log(f"blue-green: version {candidate} deployed beside {production}, smoke traffic")
        streams = [traffic(candidate), traffic(None)] if traffic else []
    else:
        client.deploy(
            model,
            production=production,
            candidate=candidate,
            weight=policy.canary_weight,
            mode="canary",
        )
        log(f"canary: version {candidate} answers {policy.canary_weight:.0%} of requests")
        streams = [traffic(None)] if traffic else []

    deadline = time.monotonic() + policy.timeout_seconds
    with contextlib.ExitStack() as stack:
        for s in streams:
            stack.enter_context(s)
        while time.monotonic() < deadline:
            stats = client.stats(model)
            if stats.get(candidate, {}).get("requests", 0) >= policy.window_requests:
                break
            time.sleep(0.25)
    stats = client.stats(model)
    cand, prod = stats.get(candidate, {}), stats.get(production)
    ok, reason = judge(policy, cand, prod)
    if not ok:
        client.deploy(model, production=production)
        log(f"rolled back to {production}: {reason}")
        return Result(
            "rolled_back", reason, candidate, production, cand, prod or {}, policy.strategy
        )
    promote_alias(candidate)
    final = (
        # the old version stays loaded, idle, as the way back
        {"production": candidate, "candidate": production, "weight": 0.0, "mode": "blue_green"}
        if policy.strategy == "blue_green"
        else {"production": candidate}
    )
    for attempt in range(3):  # the alias has moved: the server must follow it
        try:
            client.deploy(model, **final)
            break
        except Exception:
            if attempt == 2:
                raise
            time.sleep(1 + attempt)
    log(f"promoted {candidate}: {reason}")
    return Result("promoted", reason, candidate, production, cand, prod or {}, policy.strategy)
