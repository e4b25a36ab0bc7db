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


# ---- where the thresholds come from ------------------------------------------------------
# The reviewed spec sets the gate; a launch may only make it stricter. The Dagster webserver
# has no authentication, so a threshold in run config is a request, not an authority.

SPEC, RUN_CONFIG = "spec", "run config"


class GateLoosened(ValueError):
    """Run config asked for a gate looser than the reviewed spec's (or an unusable value)."""


@dataclass(frozen=True)
class Thresholds:
    """The thresholds a gate applied, and where each came from (``spec`` or ``run config``)."""

    metric: str
    floor: float
    tolerance: float
    floor_source: str
    tolerance_source: str
    spec_floor: float
    spec_tolerance: float

    def describe(self) -> str:
        def one(name: str, value: float, source: str, spec_value: float) -> str:
            if source == SPEC:
                return f"{name} {value:g} (spec)"
            return f"{name} {value:g} (run config, tightened from the spec's {spec_value:g})"

        return (
            f"{self.metric}: "
            + one("floor", self.floor, self.floor_source, self.spec_floor)
            + ", "
            + one("tolerance", self.tolerance, self.tolerance_source, self.spec_tolerance)
        )

    def as_dict(self) -> dict:
        return {
            "metric": self.metric,
            "floor": {"value": self.floor, "source": self.floor_source, "spec": self.spec_floor},
            "tolerance": {
                "value": self.tolerance,
                "source": self.tolerance_source,
                "spec": self.spec_tolerance,
            },
        }

    def tags(self) -> dict[str, str]:
        """How the registry keeps them on the gated version (``gate.*`` tags)."""
        return {
            "gate.metric": self.metric,
            "gate.floor": repr(self.floor),
            "gate.floor_source": self.floor_source,
            "gate.tolerance": repr(self.tolerance),
            "gate.tolerance_source": self.tolerance_source,
        }


def thresholds(
    spec_name: str,
    reviewed: EvaluationSpec,
    floor: float | None = None,
    tolerance: float | None = None,
    where: str = RUN_CONFIG,
) -> Thresholds:
    """The thresholds to apply: the reviewed spec's, or stricter ones asked for in ``where``.

    A higher floor (a lower one for errors such as rmse) and a smaller tolerance are
    accepted; anything looser, negative or not a finite number raises ``GateLoosened``
    naming the field, the value, the spec's value and what to do.
    """
    higher = reviewed.higher_is_better
    floor_source = tolerance_source = SPEC
    applied_floor, applied_tolerance = reviewed.floor, reviewed.tolerance
    fix = (
        f"remove it from the run config, or change evaluation.{{field}} in the spec "
        f"'{spec_name}' and have that change reviewed"
    )
    if floor is not None:
        stricter = floor >= reviewed.floor if higher else floor <= reviewed.floor
        if not math.isfinite(floor) or not stricter:
            way = "raise" if higher else "lower"
            bound = ">=" if higher else "<="
            raise GateLoosened(
                f"{where}: field 'floor' = {floor!r} would loosen the promotion gate of "
                f"'{spec_name}': the reviewed spec sets the {reviewed.metric} floor to "
                f"{reviewed.floor:g} and run config may only {way} it (give a value {bound} "
                f"{reviewed.floor:g}); " + fix.format(field="floor")
            )
        if floor != reviewed.floor:
            applied_floor, floor_source = float(floor), RUN_CONFIG
    if tolerance is not None:
        if not math.isfinite(tolerance) or tolerance < 0 or tolerance > reviewed.tolerance:
            raise GateLoosened(
                f"{where}: field 'tolerance' = {tolerance!r} would loosen the promotion gate of "
                f"'{spec_name}': the reviewed spec lets a challenger be at most "
                f"{reviewed.tolerance:g} worse than the champion and run config may only make "
                f"that smaller (give a value between 0 and {reviewed.tolerance:g}); "
                + fix.format(field="tolerance")
            )
        if tolerance != reviewed.tolerance:
            applied_tolerance, tolerance_source = float(tolerance), RUN_CONFIG
    return Thresholds(
        reviewed.metric,
        float(applied_floor),
        float(applied_tolerance),
        floor_source,
        tolerance_source,
        float(reviewed.floor),
        float(reviewed.tolerance),
    )
