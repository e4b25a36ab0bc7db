"""Sensors of the loop: a new commit flows through dataset → features → training →
evaluation → deployment (automation condition ``LOOP`` in ``conditions.py``) with no person
involved, and a failing blocking check stops it."""

import dagster as dg

from mlops_assets.defs.data.assets import missing_repository
from mlops_assets.defs.keys import MODEL, TRIGGER, raw_data_key
from mlops_assets.defs.metadata import latest_data_version
from mlops_assets.defs.resources import DataStoreResource
from mlops_assets.specs import ModelSpec


def build_automation_sensor(spec: ModelSpec) -> dg.AutomationConditionSensorDefinition:
    """Dagster's automation sensor for one model's assets, RUNNING from a fresh instance (it
    defaults to STOPPED); one per model so each run carries its model's tag (the production
    queue allows one run per model at a time)."""
    return dg.AutomationConditionSensorDefinition(
        f"{spec.name}_automation",
        target=dg.AssetSelection.key_prefixes([spec.name]),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=5,
        run_tags={TRIGGER: "new_data", MODEL: spec.name},
        description=f"Carries a new commit of '{spec.name}' through the loop (eager, checked).",
    )


def build_commit_sensor(spec: ModelSpec) -> dg.SensorDefinition:
    """Notices a new commit on main within seconds, whoever made it (`mlops ingest` reports
    its own; a write straight to lakeFS is found here), as an observation of raw_data."""

    @dg.sensor(
        name=f"{spec.name}_new_commits",
        minimum_interval_seconds=5,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Observes the head of main in lakeFS repository '{spec.dataset.repository}'.",
    )
    def new_commits(context: dg.SensorEvaluationContext, data_store: DataStoreResource):
        store = data_store.open(spec.dataset.repository)
        if why := missing_repository(spec, store):
            return dg.SkipReason(why)
        head = store.head("main")
        seen = latest_data_version(context.instance, raw_data_key(spec.name))
        if head == seen:
            return dg.SkipReason(f"main is still at {head[:12]}")
        # Dagster stores the observation when the tick ends (no run needed); a SensorResult may
        # carry a skip reason with its asset events (not with run requests): the tick's message.
        return dg.SensorResult(
            asset_events=[_main_commit_observation(spec.name, head, "new-commit sensor")],
            skip_reason=f"observed main at {head[:12]} (was {str(seen)[:12]})",
        )

    return new_commits


def _main_commit_observation(spec_name: str, commit_id: str, source: str) -> dg.AssetObservation:
    """Main is at ``commit_id``: an observation of raw_data with that data version (what
    ``report_main_commit`` records for ``mlops ingest`` and ``mlops seed``)."""
    return dg.AssetObservation(
        asset_key=raw_data_key(spec_name),
        tags={"dagster/data_version": commit_id},
        metadata={"lakefs_commit": commit_id, "source": source},
    )
