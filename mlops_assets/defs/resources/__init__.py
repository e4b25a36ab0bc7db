"""Resources, and the one function that picks them for the environment (embedded or production)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from mlops_assets.defs.resources.serving import build_serving_resource
from mlops_assets.defs.resources.tracking import build_mlflow_resource
from mlops_assets.settings import Settings
from mlops_assets.store import VersionedStore, open_store

if TYPE_CHECKING:
    import pandas as pd


class DataStoreResource(dg.ConfigurableResource):
    """The versioned data store: ``local`` (embedded, no server) or a ``lakefs`` server."""

    backend: str = Field(default="local", description="'local' (embedded) or 'lakefs'")
    local_root: str = Field(default="", description="local backend: folder of repositories")
    committer: str = Field(default="", description="local backend: who commits (MLOPS_COMMITTER)")
    lakefs_endpoint: str = Field(default="", description="lakeFS URL, e.g. https://lakefs:8000")
    lakefs_access_key_id: str = Field(default="", description="lakeFS access key id")
    lakefs_secret_access_key: str = Field(default="", description="lakeFS secret access key")
    lakefs_storage_namespace: str = Field(
        default="",
        description="base namespace for new repositories, e.g. s3://bucket/mlops",
    )

    def open(self, repository: str) -> VersionedStore:
        if self.backend == "lakefs":
            return open_store(
                "lakefs",
                repository,
                endpoint=self.lakefs_endpoint,
                access_key_id=self.lakefs_access_key_id,
                secret_access_key=self.lakefs_secret_access_key,
                storage_namespace=self.lakefs_storage_namespace,
            )
        return open_store(self.backend, repository, root=self.local_root, committer=self.committer)


class ParquetIOManager(dg.ConfigurableIOManager):
    """DataFrames as Parquet files under ``base_dir/<asset key path>.parquet`` (no pickle)."""

    base_dir: str

    def _path(self, key: dg.AssetKey) -> Path:
        return Path(self.base_dir, *key.path).with_suffix(".parquet")

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        path = self._path(context.asset_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".parquet.tmp")
        obj.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        import pandas as pd

        path = self._path(context.asset_key)
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist: materialize {context.asset_key.to_user_string()} first"
            )
        return pd.read_parquet(path)


class JsonIOManager(dg.ConfigurableIOManager):
    """Small JSON documents (a model version, a gate decision) under ``base_dir``."""

    base_dir: str

    def _path(self, key: dg.AssetKey) -> Path:
        return Path(self.base_dir, *key.path).with_suffix(".json")

    def handle_output(self, context: dg.OutputContext, obj: dict) -> None:
        path = self._path(context.asset_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
        os.replace(tmp, path)

    def load_input(self, context: dg.InputContext) -> dict:
        path = self._path(context.asset_key)
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist: materialize {context.asset_key.to_user_string()} first"
            )
        return json.loads(path.read_text())


class LocalFilesResource(dg.ConfigurableResource):
    """A folder for files a person opens from the UI: reference profiles, reports."""

    base_dir: str = Field(description="folder the files are written under")

    def write_text(self, parts: tuple[str, ...], text: str) -> Path:
        path = Path(self.base_dir, *parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return path


def build_resources(settings: Settings) -> dict[str, object]:
    """Embedded defaults, or production services where their switch says so (see settings).
    Secrets stay ``dg.EnvVar``: Dagster reads them when a run starts, they never sit in config."""
    if settings.data_backend == "lakefs":
        store = DataStoreResource(
            backend="lakefs",
            lakefs_endpoint=dg.EnvVar("LAKEFS_ENDPOINT"),
            lakefs_access_key_id=dg.EnvVar("LAKEFS_ACCESS_KEY_ID"),
            lakefs_secret_access_key=dg.EnvVar("LAKEFS_SECRET_ACCESS_KEY"),
            lakefs_storage_namespace=settings.lakefs_storage_namespace,
        )
    else:
        store = DataStoreResource(
            backend="local", local_root=str(settings.store_root), committer=settings.committer
        )
    return {
        "data_store": store,
        "mlflow": build_mlflow_resource(settings),
        "serving": build_serving_resource(settings),
        "io_manager": ParquetIOManager(base_dir=str(settings.data_dir / "assets")),
        "json_io_manager": JsonIOManager(base_dir=str(settings.data_dir / "assets")),
        "files": LocalFilesResource(base_dir=str(settings.data_dir / "files")),
    }
