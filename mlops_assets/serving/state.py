"""Who answers: the deployment state of each model, and a window of per-version figures
that a rollout watches. The state is an immutable value swapped in one assignment, so a
request sees the old state or the new one, never half of each."""

from __future__ import annotations

import bisect
import random
from collections import deque
from dataclasses import asdict, dataclass

# Latency bounds (seconds) of the exported histogram and of a window's counts: a rollout reads
# how many requests were slower than its limit from either source the same way.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)

MODES = ("single", "canary", "blue_green")


@dataclass(frozen=True)
class Deployment:
    production: str | None
    candidate: str | None = None
    weight: float = 0.0  # share of requests the candidate answers
    mode: str = "single"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}: use one of {', '.join(MODES)}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"weight {self.weight}: must be between 0 and 1")
        if self.candidate is not None and self.mode == "single":
            raise ValueError("a candidate needs mode 'canary' or 'blue_green'")

    def pick(self, draw: float | None = None) -> str | None:
        if self.candidate is None or self.weight <= 0.0:
            return self.production
        if self.weight >= 1.0:
            return self.candidate
        return (
            self.candidate
            if (random.random() if draw is None else draw) < self.weight
            else (self.production)
        )

    def versions(self) -> set[str]:
        return {v for v in (self.production, self.candidate) if v is not None}

    def as_dict(self) -> dict:
        return asdict(self)


class Window:
    """The last ``size`` requests a version answered: latency, error, mean prediction."""

    def __init__(self, size: int = 2000):
        self.latencies: deque[float] = deque(maxlen=size)
        self.errors: deque[bool] = deque(maxlen=size)
        self.means: deque[float] = deque(maxlen=size)

    def record(self, seconds: float, error: bool, mean: float | None) -> None:
        self.latencies.append(seconds)
        self.errors.append(error)
        if mean is not None:
            self.means.append(mean)

    def summary(self) -> dict:
        n = len(self.latencies)
        lat = sorted(self.latencies)
        return {
            "requests": n,
            "errors": int(sum(self.errors)),
            "error_rate": (sum(self.errors) / n) if n else 0.0,
            "p50_ms": lat[int(0.50 * (n - 1))] * 1000 if n else None,
            "p95_ms": lat[int(0.95 * (n - 1))] * 1000 if n else None,
            "mean_prediction": (sum(self.means) / len(self.means)) if self.means else None,
            # requests at or under each bound (ms), cumulative like a Prometheus histogram
            "latency_le_ms": {
                f"{b * 1000:g}": bisect.bisect_right(lat, b) for b in LATENCY_BUCKETS
            },
        }
