"""Group ``monitoring``: the prediction log's upkeep, daily (compaction into Parquet and the
retention of raw segments; the work is in ``mlops_assets.monitoring.upkeep``)."""

import datetime as dt

import dagster as dg
from pydantic import Field

from mlops_assets.defs.keys import MODEL, prediction_log_upkeep_key
from mlops_assets.defs.resources import DataStoreResource
from mlops_assets.monitoring.upkeep import UpkeepError, upkeep
from mlops_assets.serving.predlog import predictions_repository
from mlops_assets.specs import ModelSpec

# After midnight UTC, once the last segments of the day before are committed (a segment
# closes within MLOPS_LOG_SEGMENT_SECONDS, 60 s by default).
UPKEEP_CRON = "15 0 * * *"


class UpkeepConfig(dg.Config):
    today: str = Field(
        default="",
        description=(
            "UTC day the run acts for, YYYY-MM-DD: segments of earlier days are compacted, and "
            "retention counts back from it. Empty: the day the run starts (the daily schedule "
            "sets its own date)."
        ),
    )
    retention_days: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Days of raw segments to keep beside the Parquet. Empty: MLOPS_LOG_RETENTION_DAYS "
            "(30 unless set)."
        ),
    )


def _today(config: UpkeepConfig) -> dt.date:
    if not config.today:
        return dt.datetime.now(dt.UTC).date()  # a manual run: the day it runs
    try:
        return dt.date.fromisoformat(config.today)
    except ValueError:
        raise dg.Failure(
            f"config today={config.today!r} is not a date: give YYYY-MM-DD, or leave it empty",
            allow_retries=False,
        ) from None


def build_upkeep_assets(spec: ModelSpec, retention_days: int) -> list[dg.AssetsDefinition]:
    key = prediction_log_upkeep_key(spec.name)

    @dg.asset(
        key=key,
        group_name="monitoring",
        kinds={"lakefs", "parquet"},
        description=(
            f"Daily upkeep of the prediction log of '{spec.name}': closed segments compacted per "
            "day into Parquet, raw segments past retention deleted; both as commits."
        ),
    )
    def prediction_log_upkeep(
        context: dg.AssetExecutionContext, config: UpkeepConfig, data_store: DataStoreResource
    ) -> dg.MaterializeResult:
        store = data_store.open(predictions_repository(spec.dataset.repository))
        keep = retention_days if config.retention_days is None else config.retention_days
        try:
            result = upkeep(store, spec.name, _today(config), keep)
        except UpkeepError as e:
            raise dg.Failure(str(e)) from None
        context.log.info(result.describe())
        meta: dict = {
            "today": result.today.isoformat(),
            "retention_days": keep,
            "segments_compacted": result.compacted_segments,
            "rows_compacted": result.compacted_rows,
            "days_compacted": dg.MetadataValue.text(", ".join(result.days) or "none"),
            "bytes_before": result.raw_bytes + result.parquet_bytes_before,
            "bytes_after": result.parquet_bytes_after,
            "segments_waiting": result.waiting_segments,
            "segments_expired": result.expired_segments,
            "rows_expired": result.expired_rows,
            "bytes_expired": result.expired_bytes,
            "unreadable_segments": len(result.unreadable_segments),
        }
        commits = {
            "base_commit": result.base_commit,
            "compaction_commit": result.compaction_commit,
            "retention_commit": result.retention_commit,
            "commit_id": result.merge_commit,
        }
        for name, commit in commits.items():
            if commit:
                meta[name] = dg.MetadataValue.text(commit)
                url = store.commit_url(commit)
                if url:
                    meta[f"{name}_url"] = dg.MetadataValue.url(url)
        return dg.MaterializeResult(metadata=meta)

    return [prediction_log_upkeep]


def build_upkeep_schedule(spec: ModelSpec) -> dg.ScheduleDefinition:
    """The daily schedule of a job of the spec's upkeep asset: each tick runs for its own date
    (a run per day, keyed by it, so a tick is never run twice)."""
    key = prediction_log_upkeep_key(spec.name)
    job = dg.define_asset_job(
        f"{spec.name}_prediction_log_upkeep",
        selection=dg.AssetSelection.assets(key),
        description=f"Compact and expire the prediction log of '{spec.name}'.",
        tags={MODEL: spec.name},
    )

    @dg.schedule(
        name=f"{spec.name}_prediction_log_upkeep_daily",
        job=job,
        cron_schedule=UPKEEP_CRON,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Daily after midnight UTC: the upkeep of the prediction log of '{spec.name}'.",
    )
    def daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        today = context.scheduled_execution_time.astimezone(dt.UTC).date().isoformat()
        return dg.RunRequest(
            run_key=f"upkeep-{spec.name}-{today}",
            run_config={"ops": {key.to_python_identifier(): {"config": {"today": today}}}},
            tags={MODEL: spec.name, "mlops/upkeep_day": today},
        )

    return daily
