"""Compare-and-set promotion: a candidate replaces the champion its gate compared it with,
or none at all.

The gate tags its verdict on the candidate version (``gate.decision``, ``gate.champion_version``
and the thresholds that applied): the record of an evaluation is keyed by the version, so two
runs evaluating two versions at once never read each other's result. Before a rollout, and
again at the alias move, the promotion checks that ``production`` still names the champion the
gate compared against. If it moved (another rollout, a person, a rollback), the comparison is
re-run on the same holdout against the champion that serves now, with the same thresholds: the
candidate goes on only if it passes that comparison too.

Plain library code: no Dagster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_assets.specs import ModelSpec
from mlops_assets.training import gate
from mlops_assets.training.evaluate import registered_scores
from mlops_assets.training.tracking import PRODUCTION, Tracking

if TYPE_CHECKING:
    import pandas as pd


def _v(version: str | None) -> str:
    return f"v{version}" if version else "no champion"


def _none(value: str | None) -> str | None:
    return None if value in (None, "", "none") else value


@dataclass
class ChampionCheck:
    """May ``candidate`` be rolled out against ``champion`` (what ``production`` names now)?"""

    ok: bool
    candidate: str
    champion: str | None  # production now: the rollout must find it still there
    compared_against: str | None  # the champion the gate compared the candidate with
    reason: str
    regated: bool = False
    decision: gate.Decision | None = None  # the re-run comparison, if there was one
    tags: dict[str, str] = field(default_factory=dict)  # the candidate's registry tags

    def evidence(self) -> dict:
        """The gate's figures as the audit trail keeps them."""
        t = self.tags
        metric = t.get("gate.metric", "")
        figures: dict = {
            "decision": t.get("gate.decision"),
            "metric": metric or None,
            "challenger": _float(t.get(f"gate.{metric}")) if metric else None,
            "champion_version": _none(t.get("gate.champion_version")),
            "champion": _float(t.get("gate.champion_score")),
            "bar": _float(t.get("gate.bar")),
            "floor": _float(t.get("gate.floor")),
            "floor_source": t.get("gate.floor_source"),
            "tolerance": _float(t.get("gate.tolerance")),
            "tolerance_source": t.get("gate.tolerance_source"),
        }
        if self.regated and self.decision is not None:
            figures["regated_against"] = self.champion
            figures["regate_champion"] = self.decision.champion
            figures["regate_bar"] = self.decision.bar
        return {k: v for k, v in figures.items() if v is not None}


def _float(value: str | None) -> float | None:
    try:
        return None if value is None or value == "none" else float(value)
    except ValueError:
        return None


def applied_thresholds(spec: ModelSpec, tags: dict[str, str]) -> gate.Thresholds:
    """The thresholds the gate applied to a version (its tags), checked again against the
    reviewed spec: a tag edited to loosen them is refused like run config would be."""
    return gate.thresholds(
        spec.name,
        spec.evaluation,
        _float(tags.get("gate.floor")),
        _float(tags.get("gate.tolerance")),
        where="the version's gate.* tags",
    )


def check_champion(
    tracking: Tracking, spec: ModelSpec, candidate: str, x: pd.DataFrame, y: pd.Series
) -> ChampionCheck:
    """The compare half of compare-and-set: is the champion the gate compared ``candidate``
    with still ``production``? If not, re-run the comparison against the one that is (and
    record it on the candidate); ``ok`` says whether the rollout may go on."""
    name = spec.model_name
    tags = dict(tracking.version(name, candidate).tags or {})
    compared = _none(tags.get("gate.champion_version"))
    if tags.get("gate.decision") != "passed":
        why = tags.get("gate.reason", "no gate decision is recorded on it (the gate never ran)")
        return ChampionCheck(
            False, candidate, None, compared, f"version {candidate} did not pass the gate: {why}",
            tags=tags,
        )  # fmt: skip
    live = tracking.version_by_alias(name, PRODUCTION)
    current = live.version if live is not None else None
    if current == candidate:
        return ChampionCheck(
            True, candidate, current, compared, f"version {candidate} is production already",
            tags=tags,
        )  # fmt: skip
    if current == compared:
        return ChampionCheck(
            True,
            candidate,
            current,
            compared,
            f"production is still {_v(current)}, the champion the gate compared "
            f"version {candidate} with",
            tags=tags,
        )
    applied = applied_thresholds(spec, tags)
    metric = applied.metric
    challenger = registered_scores(tracking, spec, candidate, x, y)[metric]
    champion = registered_scores(tracking, spec, current, x, y)[metric] if current else None
    decision = gate.decide(metric, challenger, champion, applied.floor, applied.tolerance)
    reason = (
        f"production moved from {_v(compared)} to {_v(current)} after the gate compared "
        f"version {candidate} with {_v(compared)}; compared again with {_v(current)} on the "
        f"same holdout ({applied.describe()}): {decision.reason}"
    )
    regate = {
        "gate.regated_from": compared or "none",
        "gate.regated_against": current or "none",
        "gate.regate_decision": "passed" if decision.promote else "refused",
        "gate.regate_reason": reason[:4000],
    }
    if decision.promote:  # the candidate's comparison is now with the champion that serves
        regate["gate.champion_version"] = current or "none"
        regate["gate.champion_score"] = "none" if champion is None else str(champion)
        regate["gate.bar"] = str(decision.bar)
    tracking.tag_version(name, candidate, regate)
    tags.update(regate)
    return ChampionCheck(
        decision.promote, candidate, current, compared, reason, True, decision, tags
    )


def compare_and_set(
    tracking: Tracking,
    spec: ModelSpec,
    candidate: str,
    x: pd.DataFrame,
    y: pd.Series,
    roll_out: Callable[[str | None], Any],
    moved: Callable[[Any], bool],
    log: Callable[[str], None] = print,
    attempts: int = 3,
) -> tuple[ChampionCheck, Any]:
    """Compare (``check_champion``), then set: ``roll_out(champion)`` must start and promote
    only while ``production`` still names ``champion`` (``moved(outcome)`` says it did not).
    If production moved meanwhile, compare again with the new champion, at most ``attempts``
    times. Returns the last check and the rollout's outcome (None if the check refused)."""
    outcome = None
    for attempt in range(1, attempts + 1):
        check = check_champion(tracking, spec, candidate, x, y)
        log(check.reason)
        if not check.ok:
            return check, None
        outcome = roll_out(check.champion)
        if not moved(outcome):
            return check, outcome
        log(f"production moved during attempt {attempt} of {attempts}: comparing again")
    return check, outcome
