"""Metadata helpers: what a person sees on a materialization in the UI."""

from __future__ import annotations

import datetime as dt
import os
from typing import TYPE_CHECKING, TypeAlias

import dagster as dg

from mlops_assets.specs import ModelSpec
from mlops_assets.store import Commit, VersionedStore

if TYPE_CHECKING:
    import pandas as pd

# The parts of a spec that describe the model, not the data: editing them leaves the data and
# feature assets' code versions alone.
MODEL_SECTIONS = {
    "description",
    "registered_model",
    "model",
    "preprocessing",
    "evaluation",
    "threshold",
    "positive_class",
    "freshness",
}


# A value Dagster takes as metadata: a dg.MetadataValue or a plain value it wraps. Dagster's own
# name for this union (RawMetadataValue) is not public; this one names only public types, and
# mypy says so if it ever stops fitting Dagster's.
MetadataEntry: TypeAlias = (
    dg.MetadataValue
    | dg.TableSchema
    | dg.TableColumnLineage
    | dg.AssetKey
    | os.PathLike
    | str
    | int
    | float
    | dict
    | list
    | dt.datetime
    | None
)


def spec_version(spec: ModelSpec, code: str) -> str:
    """Code version of a data asset: its logic revision plus a digest of the spec's data part
    (editing the estimator or the gate does not make the data stale)."""
    return f"{code}-{spec.digest(exclude=MODEL_SECTIONS)}"


def commit_metadata(store: VersionedStore, commit: Commit, branch: str) -> dict[str, MetadataEntry]:
    meta: dict[str, MetadataEntry] = {
        "lakefs_repository": store.repository,
        "lakefs_branch": branch,
        "lakefs_commit": dg.MetadataValue.text(commit.id),
        "lakefs_commit_message": commit.message,
        "data_store": store.describe(),
    }
    url = store.commit_url(commit.id)
    if url:
        meta["lakefs_commit_url"] = dg.MetadataValue.url(url)
    return meta


def frame_metadata(df: pd.DataFrame, preview_rows: int = 10) -> dict[str, MetadataEntry]:
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name=str(c), type=str(t)) for c, t in df.dtypes.items()]
    )
    return {
        "dagster/row_count": len(df),
        "dagster/column_schema": schema,
        "preview": dg.MetadataValue.md(df.head(preview_rows).to_markdown(index=False)),
    }


def latest_data_version(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    """The data version Dagster last recorded for ``key`` (observation or materialization)."""
    record = instance.get_latest_data_version_record(key)
    if record is None or record.asset_event is None:
        return None
    return (record.asset_event.tags or {}).get("dagster/data_version")
