"""Simulated production traffic, and the ground truth that arrives later.

``send_traffic`` sends rows from the data simulator (optionally from a drifted world) to the
inference server, as a client would, and keeps what the simulator knows and the server does
not: the true outcome of each served row, as labels in the platform's labels contract
(``mlops_assets.monitoring.labels``), which ``commit_labels`` delivers later.

Plain library code: no Dagster import.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import httpx

from mlops_assets.demo.simulator import simulate_batch
from mlops_assets.specs import ModelSpec
from mlops_assets.training.train import records


@dataclass
class TrafficResult:
    requests: int = 0
    rows: int = 0
    errors: list[str] = field(default_factory=list)
    labels: list[dict] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)


def send_traffic(
    url: str,
    spec: ModelSpec,
    day: dt.date,
    rows: int = 500,
    batch: int = 10,
    drift: str = "none",
    seed: int = 1,
    timeout: float = 30.0,
    synthetic: str | None = None,
) -> TrafficResult:
    """POST ``rows`` simulated rows of ``day`` to ``url``/predict, ``batch`` rows a request.

    By default the rows play the part of real clients (the demo's production traffic, which
    monitoring must see). ``synthetic`` ("replay", "smoke", "bench") marks them with the
    ``X-Mlops-Synthetic`` header instead: logged as such, never in a monitoring window.

    Returns what was answered (per model version) and the delayed labels to commit later.
    """
    if not spec.simulator:
        raise ValueError(f"spec {spec.name!r} has no simulator: traffic needs one")
    if batch < 1 or rows < 1:
        raise ValueError(f"rows ({rows}) and batch ({batch}) must be at least 1")
    frame = simulate_batch(spec.simulator, day, rows=rows, seed=seed, drift=drift)
    bodies = records(frame, spec)
    truth = frame[spec.target].tolist()
    out = TrafficResult()
    headers = {"X-Mlops-Synthetic": synthetic} if synthetic else {}
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout, headers=headers) as client:
        for start in range(0, len(bodies), batch):
            chunk = bodies[start : start + batch]
            try:
                r = client.post("/predict", json={"model": spec.name, "records": chunk})
            except httpx.HTTPError as e:
                out.errors.append(f"{type(e).__name__}: {e}")
                continue
            out.requests += 1
            if r.status_code != 200:
                out.errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                continue
            answer = r.json()
            version = str(answer["model_version"])
            out.versions[version] = out.versions.get(version, 0) + len(chunk)
            out.rows += len(chunk)
            for i in range(len(chunk)):
                out.labels.append(
                    {
                        "request_id": answer["request_id"],
                        "row": i,
                        "label": truth[start + i],
                    }
                )
    return out
