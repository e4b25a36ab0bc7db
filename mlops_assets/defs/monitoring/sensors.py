"""The drift sensor: a failing drift check (severity ERROR, not a skipped window) requests a
retraining of the model and everything downstream, tagged with the evidence."""

import json
import time

import dagster as dg

from mlops_assets.defs.deployment.assets import deployment_key
from mlops_assets.defs.monitoring.assets import drift_report_key
from mlops_assets.defs.training.assets import model_evaluation_key, trained_model_key
from mlops_assets.specs import ModelSpec

COOLDOWN_SECONDS = 30 * 60


def build_drift_sensor(spec: ModelSpec, cooldown_seconds: int = COOLDOWN_SECONDS):
    check_key = dg.AssetCheckKey(drift_report_key(spec.name), "drift")
    retrain = [
        trained_model_key(spec.name),
        model_evaluation_key(spec.name),
        deployment_key(spec.name),
    ]

    @dg.sensor(
        name=f"{spec.name}_drift_retraining",
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        asset_selection=retrain,
        description=(
            f"Retrains '{spec.name}' when its drift check fails with ERROR; one run per failing "
            f"evaluation (run_key), at most one every {cooldown_seconds // 60} min (cooldown)."
        ),
    )
    def drift_retraining(context: dg.SensorEvaluationContext):
        cursor = json.loads(context.cursor) if context.cursor else {}
        records = context.instance.event_log_storage.get_asset_check_execution_history(
            check_key, limit=1
        )
        if not records or records[0].event is None:
            return dg.SkipReason("the drift check has not run yet")
        record = records[0]
        if record.id <= cursor.get("seen", -1):
            return dg.SkipReason(f"no new drift evaluation since #{cursor['seen']}")
        evaluation = record.event.dagster_event.event_specific_data
        meta = {k: v.value for k, v in (evaluation.metadata or {}).items()}
        new_cursor = {**cursor, "seen": record.id}
        failing = (
            not evaluation.passed
            and evaluation.severity == dg.AssetCheckSeverity.ERROR
            and not meta.get("skipped", False)
        )
        if not failing:
            context.update_cursor(json.dumps(new_cursor))
            return dg.SkipReason(f"drift evaluation #{record.id} does not call for retraining")
        now = time.time()
        last = cursor.get("last_trigger", 0.0)
        if now - last < cooldown_seconds:
            context.update_cursor(json.dumps(new_cursor))
            return dg.SkipReason(
                f"drift evaluation #{record.id} fails, but a retraining started "
                f"{(now - last) / 60:.0f} min ago (cooldown {cooldown_seconds // 60} min)"
            )
        context.update_cursor(json.dumps({**new_cursor, "last_trigger": now}))
        return dg.RunRequest(
            run_key=f"drift-{spec.name}-{record.id}",
            asset_selection=retrain,
            tags={
                "mlops/trigger": "drift",
                "mlops/drift_share": f"{meta.get('drift_share', float('nan')):.3f}",
                "mlops/drifted_columns": str(meta.get("drifted_columns", "")),
                "mlops/drift_report": str(meta.get("report", "")),
                "mlops/drift_evaluation": str(record.id),
            },
        )

    return drift_retraining
