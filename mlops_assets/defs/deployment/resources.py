"""The inference server for the Dagster layer: its URL and admin token."""

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from mlops_assets.serving.client import ServingClient, ServingError


class ServingResource(dg.ConfigurableResource):
    """The inference server: embedded (`mlops serve`, started by scripts/run.sh) or a URL."""

    url: str = Field(description="base URL of the inference server")
    token: str = Field(default="", description="admin token (MLOPS_SERVING_TOKEN)")
    token_file: str = Field(
        default="", description="embedded: the file the local server wrote its token to"
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


def build_serving_resource() -> ServingResource:
    """MLOPS_SERVING_URL switches to a remote server (token from MLOPS_SERVING_TOKEN)."""
    if os.environ.get("MLOPS_SERVING_URL"):
        return ServingResource(
            url=dg.EnvVar("MLOPS_SERVING_URL"), token=dg.EnvVar("MLOPS_SERVING_TOKEN")
        )
    from mlops_assets.serving.main import token_file

    return ServingResource(
        url=f"http://127.0.0.1:{os.environ.get('MLOPS_SERVING_PORT', '8080')}",
        token=os.environ.get("MLOPS_SERVING_TOKEN", ""),
        token_file=str(token_file()) if not os.environ.get("MLOPS_SERVING_TOKEN") else "",
    )
