"""The promotion gate: may a challenger replace the champion? A pure function, so every
decision can be explained and tested without a registry."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlops_assets.specs import EvaluationSpec


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    metric: str
    challenger: float
    champion: float | None
    floor: float
    tolerance: float

    @property
    def bar(self) -> float:
        """The value the challenger had to reach (or, for errors, stay under)."""
        return bar(self.metric, self.floor, self.tolerance, self.champion)


def _higher(metric: str) -> bool:
    return EvaluationSpec(metric=metric, floor=0).higher_is_better


def bar(metric: str, floor: float, tolerance: float, champion: float | None) -> float:
    if champion is None:
        return floor
    if _higher(metric):
        return max(floor, champion - abs(champion) * tolerance)
    return min(floor, champion + abs(champion) * tolerance)


def decide(
    metric: str,
    challenger: float,
    champion: float | None,
    floor: float,
    tolerance: float,
) -> Decision:
    """Promote only if the challenger clears the floor and is at most ``tolerance`` (relative)
    worse than the champion. With no champion, the floor alone decides."""

    def done(promote: bool, reason: str) -> Decision:
        return Decision(promote, reason, metric, challenger, champion, floor, tolerance)

    higher = _higher(metric)
    better, worse = (">=", "<") if higher else ("<=", ">")
    if challenger is None or math.isnan(challenger):
        return done(False, f"challenger {metric} could not be computed on the holdout: refused")
    clears_floor = challenger >= floor if higher else challenger <= floor
    if not clears_floor:
        return done(
            False,
            f"challenger {metric}={challenger:.4f} {worse} floor {floor:.4f}: refused",
        )
    if champion is not None and math.isnan(champion):
        return done(
            False,
            f"champion {metric} could not be computed on this holdout, so the challenger cannot "
            "be compared with it: refused (check the holdout, e.g. it has a single class)",
        )
    if champion is None:
        return done(
            True,
            f"no champion yet; challenger {metric}={challenger:.4f} {better} floor "
            f"{floor:.4f}: passes",
        )
    limit = bar(metric, floor, tolerance, champion)
    ok = challenger >= limit if higher else challenger <= limit
    pct = f"{tolerance:.0%}"
    if not ok:
        return done(
            False,
            f"challenger {metric}={challenger:.4f} is more than {pct} worse than champion "
            f"{metric}={champion:.4f} (needed {better} {limit:.4f}): refused",
        )
    return done(
        True,
        f"challenger {metric}={challenger:.4f} {better} {limit:.4f} (champion {champion:.4f} "
        f"within {pct}, floor {floor:.4f}): passes",
    )
