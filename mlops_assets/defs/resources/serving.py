"""The inference server for the Dagster layer: its URL and admin token, and where a rollout
reads every replica's figures (their URLs, or Prometheus)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from mlops_assets.serving.analysis import PrometheusStats, ReplicaStats
from mlops_assets.settings import Settings

if TYPE_CHECKING:
    from mlops_assets.serving.client import ServingClient


class ServingResource(dg.ConfigurableResource):
    """The inference server: embedded (`mlops serve`, started by scripts/run.sh) or a URL."""

    url: str = Field(description="base URL of the inference server")
    token: str = Field(default="", description="admin token (MLOPS_SERVING_TOKEN)")
    token_file: str = Field(
        default="", description="embedded: the file the local server wrote its token to"
    )
    replay_holdout: bool = Field(
        default=False,
        description=(
            "send the holdout rows as traffic while a rollout is watched: on in the embedded "
            "demo (no clients), off in production, where replayed rows would reach monitoring"
        ),
    )

    replicas: list[str] = Field(
        # A plain default (pydantic copies it): with `default_factory=list`, pydantic reads
        # list's signature, and inspect compiles tokenize's regexes for it (~80 ms of loading).
        default=[],
        description=(
            "every replica's URL, or dns+http://<headless-service>:<port> (MLOPS_SERVING_"
            "REPLICAS); empty: `url` is the only replica"
        ),
    )
    prometheus_url: str = Field(
        default="",
        description="production: judge rollouts on Prometheus (MLOPS_PROMETHEUS_URL)",
    )
    prometheus_selector: str = Field(
        default='job="mlops-inference"', description="PromQL label matchers of the replicas"
    )
    lease_seconds: float = Field(
        default=60.0, description="a rollout's lease; replicas drop a canary whose lease expired"
    )

    def analysis(self) -> PrometheusStats | ReplicaStats:
        """Prometheus if configured, else every listed replica (or the one URL)."""
        if self.prometheus_url:
            return PrometheusStats(self.prometheus_url, self.prometheus_selector)
        return ReplicaStats(list(self.replicas) or [self.url], self.client().token)

    def report_monitoring(self, model: str, version: str, **figures: float) -> list[str]:
        """Hand monitoring figures to every replica (each exports them as gauges, so the alert
        holds whichever replica Prometheus reads). Best effort: returns what could not be
        handed over, one line per replica, for the caller to log; never raises."""
        from mlops_assets.serving.analysis import AnalysisError, replica_urls
        from mlops_assets.serving.client import ServingClient, ServingError

        try:
            token = self.client().token
            urls = replica_urls(self.replicas) if self.replicas else [self.url]
        except (AnalysisError, ServingError) as e:
            return [str(e)]
        failed = []
        for url in urls:
            try:
                ServingClient(url, token, timeout=5.0).report_monitoring(model, version, **figures)
            except ServingError as e:
                failed.append(str(e))
        return failed

    def client(self) -> ServingClient:
        from mlops_assets.serving.client import ServingClient, ServingError

        token = self.token
        if not token and self.token_file:
            path = Path(self.token_file)
            if not path.exists():
                raise ServingError(
                    f"no admin token: {path} does not exist. Start the embedded server "
                    "(`mlops serve` or scripts/run.sh) or set MLOPS_SERVING_TOKEN"
                )
            token = path.read_text().strip()
        return ServingClient(self.url, token)


def build_serving_resource(settings: Settings) -> ServingResource:
    """MLOPS_SERVING_URL switches to a remote server (token from MLOPS_SERVING_TOKEN)."""
    shared: dict[str, Any] = {
        "replay_holdout": settings.replay_holdout,
        "replicas": list(settings.serving_replicas),
        "prometheus_url": settings.prometheus_url,
        "prometheus_selector": settings.prometheus_selector,
        "lease_seconds": settings.rollout_lease_seconds,
    }
    if settings.serving_url:
        return ServingResource(
            url=settings.serving_url, token=dg.EnvVar("MLOPS_SERVING_TOKEN"), **shared
        )
    if settings.serving_token:
        return ServingResource(
            url=settings.serving_base_url, token=dg.EnvVar("MLOPS_SERVING_TOKEN"), **shared
        )
    return ServingResource(
        url=settings.serving_base_url, token_file=str(settings.serving_token_file), **shared
    )
