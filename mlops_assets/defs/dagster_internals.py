"""The only Dagster internals the platform uses, behind one door. Dagster 1.13 has no public
name for them; mlops_assets_tests/test_dagster_internals.py fails loudly if an upgrade moves
or changes them, so the fix is here and nowhere else."""

from __future__ import annotations

import dagster as dg


def latest_check_evaluation(instance: dg.DagsterInstance, key: dg.AssetCheckKey):
    """The newest completed evaluation of a check (a planned one has no result yet): its
    execution record and its ``AssetCheckEvaluation``, or ``(None, None)``."""
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus as Status,
    )

    records = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=1, status={Status.SUCCEEDED, Status.FAILED}
    )
    if not records:
        return None, None
    record = records[0]
    event = record.event.dagster_event if record.event is not None else None
    if event is None:
        return None, None
    return record, event.event_specific_data


def freshness_failed(state) -> bool:
    """Whether a freshness state record's state is FAIL."""
    from dagster._core.definitions.freshness import FreshnessState

    return state == FreshnessState.FAIL
