"""The desired deployment state of a model, shared by every replica, and the one rule that
turns it into what a replica serves. Plain library code: no Dagster, no server, no clock.

Where the state lives: the MLflow registry, which every replica already reads to load models.

- The ``production`` alias is the truth for production (as before): promoting is one alias
  move, atomic for every reader.
- A rollout in progress is the registered-model tag ``mlops.rollout``, a small JSON object:
  ``{"rollout_id", "candidate", "weight", "mode", "lease_expires_at", "production_at_start"}``.
  No tag: production alone.

Why the registry and not the versioned store or a ConfigMap: the replicas already depend on
it (no new moving part, no RBAC), one ``get_registered_model`` call returns the alias and the
tag together (a replica never pairs an old alias with a new tag), and it holds in both
environments (embedded SQLite, the tracking server in production).

Every replica re-reads it every ``--poll-seconds`` (2 s by default) and applies
:func:`deployment_for`. The rule makes every failure end in production alone, without anyone
acting:

- the lease has expired (the rollout's process died, its Dagster run was killed): production;
- the alias is no longer the one the rollout started from (it promoted, or someone moved the
  alias by hand): production, i.e. the new alias. So promotion is "move the alias, then
  delete the tag", and a crash between the two is already consistent;
- a tag that cannot be parsed: production (and the replica logs why).

The lease is wall-clock time (epoch seconds) because replicas on several machines compare it:
clocks are assumed NTP-synchronized to well under the lease (60 s by default, renewed by the
rollout every third of it).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass

from mlops_assets.serving.state import Deployment

log = logging.getLogger("mlops.serving")

ROLLOUT_TAG = "mlops.rollout"
ROLLOUT_MODES = ("canary", "blue_green")


class RolloutStateError(ValueError):
    """The registry's rollout tag is not a rollout; the message says which field and what to do."""


@dataclass(frozen=True)
class Rollout:
    """A rollout in progress, as kept in the ``mlops.rollout`` tag."""

    rollout_id: str
    candidate: str
    weight: float
    mode: str
    lease_expires_at: float  # epoch seconds
    production_at_start: str | None

    def __post_init__(self) -> None:
        if self.mode not in ROLLOUT_MODES:
            raise RolloutStateError(
                f"rollout {self.rollout_id}: mode {self.mode!r}, use one of {ROLLOUT_MODES}"
            )
        if not 0.0 <= self.weight <= 1.0:
            raise RolloutStateError(f"rollout {self.rollout_id}: weight {self.weight} not in 0..1")
        if not math.isfinite(self.lease_expires_at):
            raise RolloutStateError(f"rollout {self.rollout_id}: lease_expires_at is not finite")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Rollout:
        try:
            raw = json.loads(text)
        except ValueError as e:
            raise RolloutStateError(f"tag {ROLLOUT_TAG!r} is not JSON: {e}") from None
        if not isinstance(raw, dict):
            raise RolloutStateError(f"tag {ROLLOUT_TAG!r} must be a JSON object")
        try:
            return cls(
                rollout_id=str(raw["rollout_id"]),
                candidate=str(raw["candidate"]),
                weight=float(raw["weight"]),
                mode=str(raw["mode"]),
                lease_expires_at=float(raw["lease_expires_at"]),
                production_at_start=(
                    None
                    if raw.get("production_at_start") is None
                    else str(raw["production_at_start"])
                ),
            )
        except KeyError as e:
            raise RolloutStateError(
                f"tag {ROLLOUT_TAG!r} has no {e.args[0]!r}: delete the tag (production then "
                "serves alone) and start the rollout again"
            ) from None
        except (TypeError, ValueError) as e:
            raise RolloutStateError(f"tag {ROLLOUT_TAG!r}: {e}") from None

    def renewed(self, lease_expires_at: float) -> Rollout:
        return Rollout(**{**asdict(self), "lease_expires_at": lease_expires_at})

    def live(self, production: str | None, now: float) -> bool:
        """Whether this rollout still decides what serves (see the module's rules)."""
        return (
            production is not None
            and now < self.lease_expires_at
            and self.production_at_start == production
            and self.candidate != production
        )


@dataclass(frozen=True)
class Desired:
    """What the registry says for one model: production, and the rollout tag if any."""

    production: str | None
    rollout: Rollout | None = None
    problem: str = ""  # why a present tag was ignored

    @classmethod
    def from_registry(cls, production: str | None, tags: dict[str, str]) -> Desired:
        text = tags.get(ROLLOUT_TAG)
        if not text:
            return cls(production)
        try:
            return cls(production, Rollout.from_json(text))
        except RolloutStateError as e:
            return cls(production, None, str(e))


def deployment_for(desired: Desired, now: float) -> Deployment:
    """What a replica serves, given the shared desired state and the time: a live rollout's
    candidate at its weight, otherwise production alone."""
    r = desired.rollout
    if r is None or not r.live(desired.production, now):
        return Deployment(production=desired.production)
    return Deployment(
        production=desired.production, candidate=r.candidate, weight=r.weight, mode=r.mode
    )


def reconciled(desired: Desired | str | None, now: float) -> Deployment:
    """:func:`deployment_for` for what a server's resolver returns: a :class:`Desired`, or a
    bare production version (a resolver that knows no rollouts)."""
    if not isinstance(desired, Desired):
        desired = Desired(desired)
    if desired.problem:
        log.warning("production alone: the rollout tag is ignored: %s", desired.problem)
    return deployment_for(desired, now)
