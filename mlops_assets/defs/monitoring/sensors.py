"""Sensors of the monitoring half of the loop.

- ``<spec>_monitoring``: new prediction-log or label commits → ``drift_report`` and
  ``production_performance`` (one run per commit of the predictions repository).
- ``<spec>_drift_retraining``: the drift check or the live-performance check fails with ERROR
  → retrain on main's newest data and roll out (``RETRAIN``), tagged with the evidence.
- ``<spec>_stale_model``: the model's freshness policy fails → the same retraining.

Every retraining request is idempotent (its ``run_key`` names the evidence), never made while
a retraining of the model is already queued or running, and at most one per cooldown.
"""

from __future__ import annotations

import json
import time

import dagster as dg

from mlops_assets.defs.dagster_internals import freshness_failed, latest_check_evaluation
from mlops_assets.defs.keys import (
    CHECK,
    EVIDENCE,
    LOG_COMMIT,
    MODEL,
    STALE_SINCE,
    TRIGGER,
    dataset_key,
    deployment_key,
    drift_report_key,
    monitor_keys,
    production_performance_key,
    raw_data_key,
    retrain_keys,
    trained_model_key,
)
from mlops_assets.defs.metadata import latest_data_version
from mlops_assets.defs.resources import DataStoreResource
from mlops_assets.monitoring.labels import labels_repository
from mlops_assets.specs import ModelSpec
from mlops_assets.store import NotFound

COOLDOWN_SECONDS = 30 * 60
# New data on main is the automation's to train on; the drift sensor steps in only if the
# automation has not picked it up within this long (stopped, or its run failed to start).
AUTOMATION_GRACE_SECONDS = 120
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def run_in_flight(instance: dg.DagsterInstance, key: dg.AssetKey) -> dg.DagsterRun | None:
    """A queued or running run that materializes ``key``, if any."""
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT), limit=50):
        if key in (run.asset_selection or ()):
            return run
    return None


def _materialization_meta(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _serving_now(instance: dg.DagsterInstance, spec_name: str) -> str | None:
    """The version the last rollout left serving (None before the first rollout)."""
    return _materialization_meta(instance, deployment_key(spec_name)).get("production_now")


def build_monitoring_sensor(spec: ModelSpec, interval_seconds: int = 10) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{spec.name}_monitoring",
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        asset_selection=monitor_keys(spec.name),
        description=(
            f"Re-computes drift and live performance of '{spec.name}' whenever new predictions "
            f"or labels are committed to '{labels_repository(spec)}'."
        ),
    )
    def monitoring(context: dg.SensorEvaluationContext, data_store: DataStoreResource):
        store = data_store.open(labels_repository(spec))
        try:
            head = store.head("main")
        except NotFound:
            return dg.SkipReason(f"nothing logged yet: no repository {store.repository!r}")
        if head == context.cursor:
            return dg.SkipReason(f"no new predictions or labels since {head[:12]}")
        running = run_in_flight(context.instance, drift_report_key(spec.name))
        if running is not None:
            return dg.SkipReason(f"monitoring run {running.run_id[:8]} is still going")
        context.update_cursor(head)
        return dg.RunRequest(
            run_key=f"monitor-{spec.name}-{head}",
            asset_selection=monitor_keys(spec.name),
            tags={TRIGGER: "new_predictions", MODEL: spec.name, LOG_COMMIT: head},
        )

    return monitoring


# (check name, asset key builder, trigger tag, figures copied into the run's tags)
TRIGGERING_CHECKS = [
    (
        "drift",
        drift_report_key,
        "drift",
        ("drift_share", "drifted_columns", "report", "report_url"),
    ),
    (
        "performance",
        production_performance_key,
        "performance",
        ("relative_change", "labelled_rows"),
    ),
]


def latest_evaluation(instance: dg.DagsterInstance, key: dg.AssetCheckKey):
    """The newest completed evaluation of a check: (execution record, evaluation)."""
    return latest_check_evaluation(instance, key)


def build_drift_sensor(spec: ModelSpec, cooldown_seconds: int = COOLDOWN_SECONDS):
    retrain = retrain_keys(spec.name)

    @dg.sensor(
        name=f"{spec.name}_drift_retraining",
        minimum_interval_seconds=10,
        default_status=dg.DefaultSensorStatus.RUNNING,
        asset_selection=retrain,
        description=(
            f"Retrains '{spec.name}' on main's newest data when its drift or live-performance "
            f"check fails with ERROR; one run per failing evaluation (run_key), none while a "
            f"retraining is under way or the data is what the model already learned, at most "
            f"one every {cooldown_seconds // 60} min (cooldown)."
        ),
    )
    def drift_retraining(context: dg.SensorEvaluationContext):
        cursor = json.loads(context.cursor) if context.cursor else {}
        instance = context.instance
        skips: list[str] = []
        for check, asset_key, trigger, figures in TRIGGERING_CHECKS:
            record, evaluation = latest_evaluation(
                instance, dg.AssetCheckKey(asset_key(spec.name), check)
            )
            if record is None:
                skips.append(f"{check}: the check has not run yet")
                continue
            if record.id <= cursor.get(check, -1):
                skips.append(f"{check}: no new evaluation since #{cursor[check]}")
                continue
            cursor[check] = record.id  # this evidence is now handled, whatever we decide
            meta = {k: v.value for k, v in (evaluation.metadata or {}).items()}
            if evaluation.passed or evaluation.severity != dg.AssetCheckSeverity.ERROR:
                skips.append(f"{check}: evaluation #{record.id} does not call for retraining")
                continue
            if meta.get("skipped", False):
                skips.append(f"{check}: evaluation #{record.id} was skipped")
                continue
            reason = _why_not(instance, spec, meta, cursor, cooldown_seconds)
            if reason:
                skips.append(f"{check}: evaluation #{record.id} fails, but {reason}")
                continue
            cursor["last_trigger"] = time.time()
            context.update_cursor(json.dumps(cursor))
            tags = {TRIGGER: trigger, MODEL: spec.name, EVIDENCE: str(record.id)}
            for name in figures:
                if name in meta:
                    value = meta[name]
                    tags[f"mlops/{name}"] = (
                        f"{value:.4f}" if isinstance(value, float) else str(value)
                    )
            tags[CHECK] = evaluation.description[:200] if evaluation.description else check
            return dg.RunRequest(
                run_key=f"{trigger}-{spec.name}-{record.id}", asset_selection=retrain, tags=tags
            )
        context.update_cursor(json.dumps(cursor))
        return dg.SkipReason("; ".join(skips))

    return drift_retraining


def _why_not(
    instance: dg.DagsterInstance, spec: ModelSpec, meta: dict, cursor: dict, cooldown: int
) -> str | None:
    """Why a failing evaluation must not start a retraining now, or None if it should."""
    serving = _serving_now(instance, spec.name)
    about = meta.get("serving_version")
    if serving is not None and about is not None and str(about) != str(serving):
        return f"it is about version {about}, and version {serving} serves now"
    running = run_in_flight(instance, trained_model_key(spec.name))
    if running is not None:
        return f"retraining run {running.run_id[:8]} is already under way"
    pending = _new_data_age(instance, spec.name)
    if pending is not None and pending < AUTOMATION_GRACE_SECONDS:
        return (
            f"main has a commit the dataset has not read yet ({pending:.0f} s old): the "
            "automation retrains on it"
        )
    learned = _materialization_meta(instance, trained_model_key(spec.name)).get("lakefs_commit")
    head = latest_data_version(instance, raw_data_key(spec.name))
    if learned and head and str(learned) == head:
        return (
            f"the model already learned main's head {head[:12]}: retraining would reproduce it. "
            "New (labelled) data is needed; ingest it and the loop retrains by itself"
        )
    elapsed = time.time() - cursor.get("last_trigger", 0.0)
    if elapsed < cooldown:
        return f"a retraining started {elapsed / 60:.0f} min ago (cooldown {cooldown // 60} min)"
    return None


def _new_data_age(instance: dg.DagsterInstance, spec_name: str) -> float | None:
    """Seconds since main moved to a commit the dataset has not read yet, or None."""
    observed = instance.get_latest_data_version_record(raw_data_key(spec_name))
    if observed is None or observed.asset_event is None:
        return None
    head = (observed.asset_event.tags or {}).get("dagster/data_version")
    if head is None or head == latest_data_version(instance, dataset_key(spec_name)):
        return None
    return time.time() - observed.timestamp


def build_freshness_sensor(spec: ModelSpec) -> dg.SensorDefinition:
    retrain = retrain_keys(spec.name)
    model = trained_model_key(spec.name)

    @dg.sensor(
        name=f"{spec.name}_stale_model",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        asset_selection=retrain,
        description=(
            f"Retrains '{spec.name}' when its model fails its freshness policy (too long since "
            "the last training), once per failure."
        ),
    )
    def stale_model(context: dg.SensorEvaluationContext):
        record = context.instance.get_freshness_state_records([model]).get(model)
        if record is None:
            return dg.SkipReason("the freshness daemon has not evaluated the model yet")
        state = record.freshness_state
        if not freshness_failed(state):
            return dg.SkipReason(f"the model's freshness is {state.value}")
        stamp = f"{record.updated_at.timestamp():.0f}"
        if context.cursor == stamp:
            return dg.SkipReason(f"already requested a retraining for the failure at {stamp}")
        running = run_in_flight(context.instance, model)
        if running is not None:
            return dg.SkipReason(f"retraining run {running.run_id[:8]} is already under way")
        context.update_cursor(stamp)
        return dg.RunRequest(
            run_key=f"freshness-{spec.name}-{stamp}",
            asset_selection=retrain,
            tags={
                TRIGGER: "freshness",
                MODEL: spec.name,
                STALE_SINCE: record.updated_at.isoformat(),
            },
        )

    return stale_model
