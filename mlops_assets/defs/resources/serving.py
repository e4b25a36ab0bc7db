"""The inference server for the Dagster layer: its URL and admin token."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from mlops_assets.serving.client import ServingClient, ServingError
from mlops_assets.settings import Settings


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

    def client(self) -> ServingClient:
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
    replay = settings.replay_holdout
    if settings.serving_url:
        return ServingResource(
            url=settings.serving_url,
            token=dg.EnvVar("MLOPS_SERVING_TOKEN"),
            replay_holdout=replay,
        )
    if settings.serving_token:
        return ServingResource(
            url=settings.serving_base_url,
            token=dg.EnvVar("MLOPS_SERVING_TOKEN"),
            replay_holdout=replay,
        )
    return ServingResource(
        url=settings.serving_base_url,
        token_file=str(settings.serving_token_file),
        replay_holdout=replay,
    )
