"""Sensors of the monitoring half of the loop.

- ``<spec>_monitoring``: new prediction-log or label commits → ``drift_report`` and
  ``production_performance`` (one run at a time, on the newest commit; none while the model
  retrains).
- ``<spec>_drift_retraining``: the drift check or the live-performance check fails with ERROR
  → retrain on main's newest data and roll out (``RETRAIN``), tagged with the evidence.
- ``<spec>_stale_model``: the model's freshness policy fails → the same retraining, if main has
  data the model has not learned (otherwise an alert, and no retraining); a failed one is
  retried with backoff until the model is fresh.

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
from mlops_assets.defs.resources.serving import ServingResource
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
        # The model is being replaced: a report on the version leaving could change nothing (no
        # retraining is requested while one runs), and it would take the CPU from the one
        # coming. The commits wait; the first tick after it ends catches up with main.
        retraining = run_in_flight(context.instance, trained_model_key(spec.name))
        if retraining is not None:
            return dg.SkipReason(
                f"retraining run {retraining.run_id[:8]} is under way: monitoring resumes when "
                "it ends"
            )
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


# A failed staleness retraining is tried again after 5 min, then 10, 20, ... at most 6 h apart,
# for as long as the model stays stale: never dropped.
STALE_RETRY_SECONDS = 5 * 60
STALE_RETRY_MAX_SECONDS = 6 * 3600
STALE_ATTEMPT = "mlops/stale_attempt"
FAILED = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def _read_cursor(raw: str | None) -> dict:
    try:
        state = json.loads(raw) if raw else {}
    except json.JSONDecodeError:  # the cursor before retries: the failure's stamp alone
        state = {"stamp": raw, "attempt": 1, "requested_at": 0.0}
    return state if isinstance(state, dict) else {}


def _stale_cursor(raw: str | None, stamp: str) -> dict:
    """The sensor's memory of the current freshness failure (a new failure starts afresh, but
    remembers whether the servers' alert gauge is still set)."""
    state = _read_cursor(raw)
    if state.get("stamp") != stamp:
        state = {"stamp": stamp, "attempt": 0, "gauge": state.get("gauge", 0)}
    return state


def _attempt_run(instance: dg.DagsterInstance, stale_since: str, attempt: int):
    """The run record of retraining attempt ``attempt`` for one freshness failure, if it exists."""
    found = instance.get_run_records(
        filters=dg.RunsFilter(tags={STALE_SINCE: stale_since, STALE_ATTEMPT: str(attempt)}),
        limit=1,
    )
    return found[0] if found else None


def retry_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1, 2, ...): base, 2 base, 4 base, ..."""
    return min(cap, base * 2 ** (attempt - 1))


def _no_new_data(instance: dg.DagsterInstance, spec: ModelSpec) -> tuple[str, str] | None:
    """(model's data commit, main's head) if main has nothing the model has not learned."""
    learned = _materialization_meta(instance, trained_model_key(spec.name)).get("lakefs_commit")
    head = latest_data_version(instance, raw_data_key(spec.name))
    if learned and head and str(learned) == head:
        return str(learned), head
    return None


def _stale_alert(
    instance: dg.DagsterInstance, spec: ModelSpec, commit: str, since: str, now: float
) -> tuple[str, dg.AssetObservation]:
    """The alert for a stale model with nothing new to learn: a message and an observation of
    trained_model whose figures the UI plots (``stale_without_new_data`` 1, the model's age)."""
    event = instance.get_latest_materialization_event(trained_model_key(spec.name))
    age_hours = (now - event.timestamp) / 3600 if event is not None else -1.0
    message = (
        f"ALERT: '{spec.name}' is stale (freshness failed at {since}) but main is still at "
        f"{commit[:12]}, the commit its model learned: retraining would reproduce the same "
        "model, so none is started. Ingest new data (`mlops ingest`) and the loop retrains; or "
        "widen freshness.model_max_age_hours in the spec if this data changes rarely"
    )
    observation = dg.AssetObservation(
        asset_key=trained_model_key(spec.name),
        metadata={
            "stale_without_new_data": dg.MetadataValue.int(1),
            "model_age_hours": dg.MetadataValue.float(round(age_hours, 2)),
            "model_data_commit": dg.MetadataValue.text(commit),
            "main_head": dg.MetadataValue.text(commit),
            "stale_since": since,
            "alert": message,
        },
    )
    return message, observation


def _alert_gauge(
    context: dg.SensorEvaluationContext, serving: ServingResource, spec: ModelSpec, value: int
) -> bool:
    """Set every replica's ``mlops_model_stale_without_new_data`` gauge of the model (what the
    ``MlopsModelStaleWithoutNewData`` alert reads); True if every replica took it."""
    version = _materialization_meta(context.instance, trained_model_key(spec.name)).get(
        "model_version", ""
    )
    failed = serving.report_monitoring(spec.name, str(version), stale_without_new_data=float(value))
    for failure in failed:
        context.log.warning(f"stale-model gauge not handed to the inference server: {failure}")
    return not failed


def _clear_gauge(
    context: dg.SensorEvaluationContext, serving: ServingResource, spec: ModelSpec, state: dict
) -> dict:
    """The alert no longer holds: clear the gauge if this sensor set it (kept until it is)."""
    if state.get("gauge") and _alert_gauge(context, serving, spec, 0):
        state = {**state, "gauge": 0}
    return state


def build_freshness_sensor(
    spec: ModelSpec,
    retry_seconds: float = STALE_RETRY_SECONDS,
    max_retry_seconds: float = STALE_RETRY_MAX_SECONDS,
    clock=time.time,
) -> dg.SensorDefinition:
    retrain = retrain_keys(spec.name)
    model = trained_model_key(spec.name)

    @dg.sensor(
        name=f"{spec.name}_stale_model",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        asset_selection=retrain,
        description=(
            f"Retrains '{spec.name}' when its model fails its freshness policy and main has data "
            "it has not learned; with none, raises an alert instead (an observation of "
            "trained_model, stale_without_new_data = 1, and the servers' gauge "
            "mlops_model_stale_without_new_data). A failed retraining is retried with "
            f"backoff ({retry_seconds / 60:g} min, doubling, at most "
            f"{max_retry_seconds / 3600:g} h apart) for as long as the model is stale."
        ),
    )
    def stale_model(context: dg.SensorEvaluationContext, serving: ServingResource):
        instance = context.instance
        record = instance.get_freshness_state_records([model]).get(model)
        if record is None:
            return dg.SkipReason("the freshness daemon has not evaluated the model yet")
        if not freshness_failed(record.freshness_state):
            state = _read_cursor(context.cursor)
            if state.get("gauge"):
                context.update_cursor(json.dumps(_clear_gauge(context, serving, spec, state)))
            return dg.SkipReason(f"the model's freshness is {record.freshness_state.value}")
        stamp, since = f"{record.updated_at.timestamp():.0f}", record.updated_at.isoformat()
        state = _stale_cursor(context.cursor, stamp)
        running = run_in_flight(instance, model)
        if running is not None:
            if state.get("gauge"):  # a retraining is under way: no longer "nothing to learn"
                context.update_cursor(json.dumps(_clear_gauge(context, serving, spec, state)))
            return dg.SkipReason(f"retraining run {running.run_id[:8]} is already under way")
        if (same := _no_new_data(instance, spec)) is not None:
            message, observation = _stale_alert(instance, spec, same[0], since, clock())
            # on every tick: a replica that restarted or was added gets the alert too
            _alert_gauge(context, serving, spec, 1)
            state["gauge"] = 1
            if state.get("alerted") == same[1]:
                context.update_cursor(json.dumps(state))
                return dg.SkipReason(message)
            state["alerted"] = same[1]
            return dg.SensorResult(
                asset_events=[observation], skip_reason=message, cursor=json.dumps(state)
            )
        if state.get("gauge"):  # new data: a retraining, not an alert
            state = _clear_gauge(context, serving, spec, state)
            context.update_cursor(json.dumps(state))
        attempt = int(state.get("attempt", 0))
        if attempt:
            why_wait = _why_wait(instance, state, since, retry_seconds, max_retry_seconds, clock)
            if why_wait:
                return dg.SkipReason(why_wait)
        attempt += 1
        state.update(attempt=attempt, requested_at=clock())
        context.update_cursor(json.dumps(state))
        return dg.RunRequest(
            run_key=f"freshness-{spec.name}-{stamp}-{attempt}",
            asset_selection=retrain,
            tags={
                TRIGGER: "freshness",
                MODEL: spec.name,
                STALE_SINCE: since,
                STALE_ATTEMPT: str(attempt),
            },
        )

    return stale_model


def _why_wait(
    instance: dg.DagsterInstance,
    state: dict,
    since: str,
    base: float,
    cap: float,
    clock,
) -> str | None:
    """Why the next retraining attempt must wait, or None if it is due."""
    attempt = int(state["attempt"])
    run = _attempt_run(instance, since, attempt)
    delay = retry_delay(attempt, base, cap)
    if run is None:  # requested, not (yet) created: give the daemon the same delay to start it
        due = float(state.get("requested_at", 0.0)) + delay
        if clock() < due:
            return (
                f"already requested a retraining for the failure at {state['stamp']} (attempt "
                f"{attempt}); waiting for its run to start (asked again after {delay:.0f} s)"
            )
        return None
    status = run.dagster_run.status
    if status not in FAILED:
        return (
            f"retraining attempt {attempt} (run {run.dagster_run.run_id[:8]}) ended "
            f"{status.value}; waiting for the freshness policy to see the new model"
        )
    due = (run.end_time or run.create_timestamp.timestamp()) + delay
    if clock() < due:
        return (
            f"retraining attempt {attempt} (run {run.dagster_run.run_id[:8]}) failed; attempt "
            f"{attempt + 1} in {due - clock():.0f} s (backoff {delay:.0f} s)"
        )
    return None
