"""Safe rollout of a new model version to every inference-server replica: canary or
blue-green, decided automatically from what the candidate served on all of them. Plain library
code, no Dagster.

The rollout never talks to one server. It writes the desired state where every replica reads
it (the registry: the ``production`` alias and the ``mlops.rollout`` tag, see
:mod:`mlops_assets.serving.reconcile`), every replica reconciles to it within a poll, and the
analysis reads every replica (:mod:`mlops_assets.serving.analysis`).

Canary: the candidate answers ``canary_weight`` of the requests on every replica. Blue-green:
the candidate is loaded beside production with no traffic, answers pinned smoke traffic, then
takes all of it in one switch (the alias move; the old version stays loaded, idle). Either way
the candidate's requests, summed over the replicas, are judged as they come: by default a
sequential test (:mod:`mlops_assets.serving.sequential`) promotes or rolls back as soon as the
evidence on errors, latency and the mean prediction supports it, at stated error rates, and
``window_requests`` is the most it waits for; with ``decision_rule="fixed"`` the candidate must
answer ``window_requests`` requests with an error rate, p95 latency and mean prediction within
bounds. Then the alias moves to it, or it does not.

Never stuck: the tag carries a lease the rollout renews while it watches. Whatever happens
(a refusal, an exception, MLflow down, the process killed), the tag is deleted in ``finally``
or, if the process died or MLflow is down, its lease expires; either way every replica serves
the ``production`` alias alone, by itself. Promotion is one alias move and is idempotent (a
second run finds the candidate already serving); so is a rollback (deleting a tag that is gone).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from mlops_assets.serving.analysis import AnalysisError
from mlops_assets.serving.reconcile import ROLLOUT_TAG, Desired, Rollout, deployment_for
from mlops_assets.serving.sequential import decide, prediction_shift, shift_reason
from mlops_assets.serving.state import Deployment


@dataclass(frozen=True)
class Policy:
    strategy: str = "canary"
    canary_weight: float = 0.2
    window_requests: int = 1000
    max_error_rate: float = 0.01
    max_p95_ms: float = 200.0
    max_prediction_shift: float = 0.5
    timeout_seconds: float = 120.0
    lease_seconds: float = 60.0
    # sequential: decide as soon as the evidence does (serving/sequential.py), window_requests
    # being the most it waits for; fixed: always wait for window_requests
    decision_rule: str = "sequential"
    false_promote_rate: float = 0.05
    false_rollback_rate: float = 0.05


@dataclass
class Result:
    decision: str  # promoted | rolled_back | already_serving | first_deployment | champion_moved
    reason: str
    candidate: str
    production_before: str | None
    candidate_stats: dict = field(default_factory=dict)
    production_stats: dict = field(default_factory=dict)
    strategy: str = "canary"
    rollout_id: str = ""
    lagging: list[str] = field(default_factory=list)  # replicas not on the final state


class RolloutBusy(RuntimeError):
    """Another rollout of the model holds a live lease."""


class ChampionMoved(RuntimeError):
    """``production`` no longer names the champion the candidate was compared with."""

    def __init__(self, message: str, now: str | None) -> None:
        super().__init__(message)
        self.now = now


_UNCHECKED = object()


class Analysis(Protocol):
    def describe(self) -> str: ...
    def reset(self, model: str) -> None: ...
    def stats(
        self, model: str, since: float, candidate: str | None = None, slow_ms: float | None = None
    ) -> dict[str, dict]: ...
    def lagging(self, model: str, wanted: Deployment) -> list[str]: ...


@dataclass
class RegistryControl:
    """The desired state of one registered model, in the registry (a ``Tracking``)."""

    tracking: object  # mlops_assets.training.tracking.Tracking (imported lazily: MLflow)
    model_name: str

    def desired(self) -> Desired:
        production, tags = self.tracking.model_state(self.model_name)  # type: ignore[attr-defined]
        return Desired.from_registry(production, tags)

    def write(self, rollout: Rollout) -> None:
        self.tracking.set_model_tag(self.model_name, ROLLOUT_TAG, rollout.to_json())  # type: ignore[attr-defined]

    def clear(self, rollout_id: str) -> None:
        """Delete the tag if it is this rollout's (or unreadable); another rollout's stays."""
        current = self.desired().rollout
        if current is None or current.rollout_id == rollout_id:
            self.tracking.delete_model_tag(self.model_name, ROLLOUT_TAG)  # type: ignore[attr-defined]

    def promote(self, version: str) -> None:
        self.tracking.promote(self.model_name, version)  # type: ignore[attr-defined]


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
    shift = prediction_shift(cand, prod)
    if shift is not None and shift > policy.max_prediction_shift:
        return False, shift_reason(cand, prod, shift, policy.max_prediction_shift)
    p95 = f"{cand['p95_ms']:.1f} ms" if cand["p95_ms"] is not None else "unknown"
    return True, (
        f"candidate served {n} requests: error rate {cand['error_rate']:.1%}, p95 "
        f"{p95}, mean prediction {c_mean:.4g}"
        + (f" (production {p_mean:.4g})" if p_mean is not None else "")
    )


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


@dataclass
class _Lease:
    """The rollout's tag, renewed every third of the lease while the rollout watches."""

    control: RegistryControl
    state: Rollout
    seconds: float
    clock: Callable[[], float]
    log: Callable[[str], None]
    renewed_at: float = 0.0
    problem: str = ""

    def write(self) -> None:
        now = self.clock()
        self.state = self.state.renewed(now + self.seconds)
        self.control.write(self.state)
        self.renewed_at = now

    def keep(self) -> None:
        if self.clock() - self.renewed_at < self.seconds / 3:
            return
        try:
            self.write()
            self.problem = ""
        except Exception as e:  # MLflow down: keep watching; the decision checks the lease
            self.problem = f"{type(e).__name__}: {str(e)[:300]}"
            self.log(
                f"could not renew the lease (expires {_iso(self.state.lease_expires_at)}): "
                f"{self.problem}"
            )

    def lapsed(self) -> bool:
        return self.clock() >= self.state.lease_expires_at


def rollout(
    control: RegistryControl,
    analysis: Analysis,
    model: str,
    candidate: str,
    policy: Policy,
    traffic: Callable[[str | None], contextlib.AbstractContextManager] | None = None,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.time,
    expected_production: object = _UNCHECKED,  # str | None to check
) -> Result:
    """Roll ``candidate`` out on ``model`` (the spec's name, as the servers know it).

    Compare-and-set: with ``expected_production`` (the champion the candidate's gate compared
    it with), the rollout neither starts nor promotes unless ``production`` still names it;
    otherwise the decision is ``champion_moved`` and nothing moved.

    ``traffic(pinned_version)`` (optional) returns a context manager that sends requests while
    the rollout watches (the demo replays the holdout; in production, real traffic flows). Two
    streams run: one pinned to the candidate, so the evidence it needs comes at the replay's
    pace (a canary's unpinned share alone would take 1/``canary_weight`` as long), and one
    through the routing the clients see.
    """
    desired = control.desired()
    production = desired.production
    if expected_production is not _UNCHECKED and production not in (
        expected_production,
        candidate,
    ):
        return Result(
            "champion_moved",
            f"production is {production or 'unset'}, not {expected_production or 'unset'} as "
            f"when version {candidate} was compared with it: nothing rolled out",
            candidate, production, strategy=policy.strategy,
        )  # fmt: skip
    if production == candidate:
        return Result(
            "already_serving", f"version {candidate} already serves", candidate, production,
            strategy=policy.strategy,
        )  # fmt: skip
    if production is None:
        control.promote(candidate)
        return Result(
            "first_deployment", f"no version served yet: {candidate} now serves on every replica",
            candidate, None, strategy=policy.strategy,
        )  # fmt: skip
    other = desired.rollout
    if other is not None and other.live(production, clock()):
        raise RolloutBusy(
            f"rollout {other.rollout_id} of version {other.candidate} holds {control.model_name} "
            f"until {_iso(other.lease_expires_at)}: wait for it to end, or, if its process is "
            f"gone, for the lease to expire (or delete the registered model's tag {ROLLOUT_TAG!r})"
        )
    blue_green = policy.strategy == "blue_green"
    state = Rollout(
        rollout_id=uuid.uuid4().hex[:12],
        candidate=candidate,
        weight=0.0 if blue_green else policy.canary_weight,
        mode="blue_green" if blue_green else "canary",
        lease_expires_at=clock() + policy.lease_seconds,
        production_at_start=production,
    )
    lease = _Lease(control, state, policy.lease_seconds, clock, log)
    result = Result(
        "rolled_back", "", candidate, production, strategy=policy.strategy,
        rollout_id=state.rollout_id,
    )  # fmt: skip
    try:
        lease.write()
        _watch(lease, analysis, model, policy, traffic, log, result)
        if result.decision == "promoted":
            try:
                _promote(control, candidate, production, log)
            except ChampionMoved as e:
                result.decision, result.reason = "champion_moved", f"{result.reason}; but {e}"
                production = e.now
    finally:
        try:
            control.clear(state.rollout_id)
        except Exception as e:
            log(
                f"could not delete the rollout tag ({type(e).__name__}: {str(e)[:300]}); its "
                f"lease expires at {_iso(lease.state.lease_expires_at)} and every replica then "
                "serves the production alias by itself"
            )
    final = Deployment(production=candidate if result.decision == "promoted" else production)
    result.lagging = _settle(analysis, model, final, min(policy.timeout_seconds, 30.0))
    log(f"{result.decision} {candidate}: {result.reason}")
    if result.lagging:
        log(f"replicas not yet on {final.as_dict()}: {'; '.join(result.lagging)}")
    return result


def _settle(analysis: Analysis, model: str, final: Deployment, seconds: float) -> list[str]:
    """Wait (bounded) until every replica serves the final state; who has not, if any."""
    deadline = time.monotonic() + seconds
    lagging = analysis.lagging(model, final)
    while lagging and time.monotonic() < deadline:
        time.sleep(0.25)
        lagging = analysis.lagging(model, final)
    return lagging


def _watch(lease, analysis, model, policy, traffic, log, result: Result) -> None:
    """Wait until every replica serves the rollout, watch the window, decide (in ``result``)."""
    deadline = time.monotonic() + policy.timeout_seconds
    wanted = deployment_for(Desired(result.production_before, lease.state), lease.clock())
    lagging = analysis.lagging(model, wanted)
    while lagging and time.monotonic() < deadline:
        time.sleep(0.25)
        lease.keep()
        lagging = analysis.lagging(model, wanted)
    if lagging:
        result.reason = (
            f"not every replica took the rollout within {policy.timeout_seconds:g}s: "
            f"{'; '.join(lagging)}; rolled back"
        )
        return
    analysis.reset(model)
    since = lease.clock()
    what = (
        "blue-green: deployed beside production, smoke traffic"
        if policy.strategy == ("blue_green")
        else f"canary: answers {policy.canary_weight:.0%} of requests"
    )
    log(f"version {result.candidate} on every replica ({analysis.describe()}); {what}")
    # Synthetic traffic (the holdout replay), when given: one stream pinned to the candidate,
    # so its evidence comes at the replay's pace and not at canary_weight of it (blue-green:
    # its only traffic), and one through the routing every client sees.
    streams = [] if traffic is None else [traffic(result.candidate), traffic(None)]
    stats: dict | None = None  # the first complete view that decides, or a full window
    verdict = None
    with contextlib.ExitStack() as stack:
        for s in streams:
            stack.enter_context(s)
        while time.monotonic() < deadline:
            lease.keep()
            try:
                seen = _read(analysis, model, since, result.candidate, policy)
                cand = seen.get(result.candidate, {})
                if policy.decision_rule == "sequential":
                    verdict = _sequential(policy, cand, seen.get(result.production_before))
                    if verdict.decision != "undecided":
                        stats = seen
                        break
                if cand.get("requests", 0) >= policy.window_requests:
                    stats = seen
                    break
            except AnalysisError:
                pass  # a replica restarting: the final read below decides
            time.sleep(0.25)
    if stats is None:  # nothing decided in time: judge what every replica saw
        try:
            stats = _read(analysis, model, since, result.candidate, policy)
        except AnalysisError as e:
            result.reason = f"{e}; rolled back"
            return
    cand, prod = stats.get(result.candidate, {}), stats.get(result.production_before) or {}
    result.candidate_stats, result.production_stats = cand, prod
    if lease.lapsed():
        why = lease.problem or "not renewed"
        result.reason = (
            f"the lease lapsed at {_iso(lease.state.lease_expires_at)} ({why}): replicas may "
            "have fallen back during the window; rolled back"
        )
        return
    if verdict is not None and verdict.decision != "undecided":
        ok, result.reason = verdict.decision == "promote", verdict.reason
    else:  # the fixed window (or the sequential test's maximum window / time) decides
        ok, result.reason = judge(policy, cand, prod)
        if policy.decision_rule == "sequential":
            result.reason += " (sequential test undecided: the fixed-window rule decided)"
    if ok:
        result.decision = "promoted"


def _read(analysis: Analysis, model: str, since: float, candidate: str, policy: Policy) -> dict:
    return analysis.stats(model, since, candidate, slow_ms=policy.max_p95_ms)


def _sequential(policy: Policy, cand: dict, prod: dict | None):
    return decide(
        cand,
        prod,
        max_error_rate=policy.max_error_rate,
        max_p95_ms=policy.max_p95_ms,
        max_prediction_shift=policy.max_prediction_shift,
        false_promote_rate=policy.false_promote_rate,
        false_rollback_rate=policy.false_rollback_rate,
    )


def _promote(control: RegistryControl, candidate: str, production: str, log) -> None:
    """Move the alias: the switch on every replica. If the call fails, say which state the
    registry is in; the tag is deleted (or expires) either way, so nothing is left half.
    Compare-and-set: if ``production`` moved while the canary ran, nothing moves
    (``ChampionMoved``): the candidate was judged beside a version that no longer serves."""
    now = control.desired().production
    if now != production:
        raise ChampionMoved(
            f"production moved from {production} to {now or 'unset'} during the rollout: "
            f"version {candidate} was not promoted (it was judged beside {production})",
            now,
        )
    try:
        control.promote(candidate)
    except Exception as e:
        try:
            now = control.desired().production
        except Exception:
            now = None
        if now == candidate:  # the alias moved; only the previous_production alias may lag
            log(f"promoted {candidate}, but remembering {production} as previous failed: {e}")
            return
        raise RuntimeError(
            f"moving the production alias to {candidate} failed ({type(e).__name__}: "
            f"{str(e)[:300]}); the alias names {now or 'an unknown version (registry down)'}, and "
            "every replica serves what it names once the rollout tag is gone or its lease "
            "expires. Run the deployment again to retry: it is idempotent"
        ) from e
