"""Challenger against champion on one holdout, the promotion gate, and the registry moves it
allows: the whole model_evaluation step as plain library code (the asset maps it to the UI).

The decision is tagged on the version first; aliases move last, one call each, so an
interrupted evaluation never leaves an alias on an undecided version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlops_assets.specs import EvaluationSpec, ModelSpec
from mlops_assets.training import gate, onnx_export
from mlops_assets.training.lineage import gate_section
from mlops_assets.training.run import MODEL_CARD
from mlops_assets.training.tracking import (
    CHALLENGER,
    PRODUCTION,
    Tracking,
    TrackingUnavailable,
    append_to_model_file,
)
from mlops_assets.training.train import score

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Evaluation:
    version: str
    champion_version: str | None
    decision: gate.Decision
    challenger_scores: dict[str, float]
    champion_scores: dict[str, float] | None
    aliases_moved: list[str] = field(default_factory=list)
    parity: onnx_export.Parity | None = None  # the ONNX graph against the skops model

    @property
    def verdict(self) -> str:
        return "passed" if self.decision.promote else "refused"

    def table(self) -> str:
        """The scores side by side, as Markdown."""
        rows = ["| metric | challenger | champion |", "|---|---|---|"]
        for k, v in self.challenger_scores.items():
            c = f"{self.champion_scores[k]:.4f}" if self.champion_scores else "none"
            rows.append(f"| {k} | {v:.4f} | {c} |")
        return "\n".join(rows)


def registered_scores(
    tracking: Tracking, spec: ModelSpec, version: str, x: pd.DataFrame, y: pd.Series
) -> dict[str, float]:
    """Score the REGISTERED artifact (as it would be served), at its own decision threshold."""
    from mlops_assets.training.pipeline import spec_types

    return score(tracking.load_model(spec.model_name, version, spec_types(spec)), x, y, spec)


def evaluate(
    tracking: Tracking,
    spec: ModelSpec,
    version: str,
    x: pd.DataFrame,
    y: pd.Series,
    thresholds: EvaluationSpec | gate.Thresholds,
    retry_hint: str = "evaluate it again",
    extra_tags: dict[str, str] | None = None,
    on_first_production: Callable[[Evaluation], None] | None = None,
) -> Evaluation:
    """Gate ``version`` against the current ``production`` version on ``(x, y)``; record the
    decision on the version; give a passing one ``challenger`` (and ``production`` if there
    is none yet, and no other gate took it since we looked).

    The decision, the champion compared against, the thresholds and ``extra_tags`` (the run
    that gated) are tagged on the version: the record of this evaluation is keyed by the
    version, never a file shared by concurrent runs. ``on_first_production`` is called after
    the version became the first ``production`` (the audit trail records it)."""
    name, metric = spec.model_name, thresholds.metric
    from mlops_assets.training.pipeline import spec_types

    model = tracking.load_model(name, version, spec_types(spec))
    challenger = score(model, x, y, spec)
    # Compiled inference may serve only what answered the whole holdout like the skops model;
    # the outcome is recorded, and never decides the gate.
    parity = onnx_export.verify(tracking, spec, version, model, x)
    champion = tracking.version_by_alias(name, PRODUCTION)
    champion_scores = None
    if champion is not None:
        same = champion.version == version
        champion_scores = (
            challenger if same else registered_scores(tracking, spec, champion.version, x, y)
        )
    decision = gate.decide(
        metric,
        challenger[metric],
        champion_scores[metric] if champion_scores else None,
        thresholds.floor,
        thresholds.tolerance,
    )
    result = Evaluation(
        version,
        champion.version if champion else None,
        decision,
        challenger,
        champion_scores,
        parity=parity,
    )
    tracking.tag_version(
        name,
        version,
        {
            "gate.decision": result.verdict,
            "gate.reason": decision.reason,
            f"gate.{metric}": str(challenger[metric]),
            "gate.champion_version": result.champion_version or "none",
            "gate.champion_score": str(champion_scores[metric]) if champion_scores else "none",
            "gate.bar": str(decision.bar),
            **(thresholds.tags() if isinstance(thresholds, gate.Thresholds) else {}),
            **(extra_tags or {}),
            **parity.tags(),
        },
    )
    _card(tracking, name, result, metric, thresholds)
    if not decision.promote:
        return result
    try:
        tracking.set_alias(name, CHALLENGER, version)
        result.aliases_moved.append(CHALLENGER)
        if champion is None and tracking.version_by_alias(name, PRODUCTION) is None:
            tracking.promote(name, version)
            result.aliases_moved.append(PRODUCTION)
            if on_first_production is not None:
                on_first_production(result)
    except TrackingUnavailable as e:
        raise TrackingUnavailable(
            f"{e} The gate passed version {version}; aliases moved before the failure: "
            f"{', '.join(result.aliases_moved) or 'none'}. {retry_hint} to finish."
        ) from e
    return result


def _card(tracking: Tracking, name: str, result: Evaluation, metric: str, thresholds) -> None:
    """The gate's decision appended to the version's model card. A version without a card
    (registered from outside the platform) gets a tag saying so; the gate stands either way."""
    figures = {
        f"challenger {metric}": f"{result.challenger_scores[metric]:.4f}",
        "champion": (
            f"version {result.champion_version}: {result.champion_scores[metric]:.4f}"
            if result.champion_scores and result.champion_version
            else "none"
        ),
        "bar": f"{result.decision.bar}",
        "floor": f"{thresholds.floor}",
        "tolerance": f"{thresholds.tolerance}",
    }
    try:
        append_to_model_file(
            tracking, name, result.version, MODEL_CARD,
            gate_section(result.verdict, result.decision.reason, figures),
        )  # fmt: skip
    except Exception as e:  # no card to append to: say so on the version
        tracking.tag_version(
            name,
            result.version,
            {"model_card.gate": f"not appended: {type(e).__name__}: {str(e)[:300]}"},
        )
