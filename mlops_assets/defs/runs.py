"""What a run itself produced. An asset's stored value is one file per asset, which a
concurrent run of the same asset may overwrite between our upstream step and us; decisions
that must belong to this run (which version was trained, which one the gate judged) are read
from this run's own materialization events, whose metadata names the version."""

from __future__ import annotations

import dagster as dg


def this_run_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dict | None:
    """The metadata of ``key``'s materialization in this run, or None if this run did not
    materialize it."""
    records = context.instance.get_records_for_run(
        context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    for record in reversed(records):
        mat = record.event_log_entry.asset_materialization
        if mat is not None and mat.asset_key == key:
            return {k: v.value for k, v in mat.metadata.items()}
    return None


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict | None:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def run_or_latest_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dict | None:
    """This run's materialization of ``key`` if it made one, else the latest (a run of the
    downstream asset alone acts on what was last materialized)."""
    return this_run_metadata(context, key) or latest_metadata(context.instance, key)
