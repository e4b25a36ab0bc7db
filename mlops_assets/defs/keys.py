"""Every asset key, selection and run-tag name of a model spec, in one place.

Each spec gets the same chain under its own key prefix (``churn/dataset``, ...). Domain folders
under ``defs/`` import keys from here, never from each other (a test enforces it).
"""

import dagster as dg

# The closed loop, in order: what new data or a retraining trigger runs.
LOOP_STEPS = ("dataset", "features", "trained_model", "model_evaluation", "deployment")
MONITORING_STEPS = ("drift_report", "production_performance")
# Every asset of a spec, as the lineage graph draws them.
ASSET_NAMES = (
    "raw_data",
    *LOOP_STEPS,
    *MONITORING_STEPS,
    "prediction_log_upkeep",
    "batch_predictions",
)

# Run tags (shown on every run in the UI; the sensors and the loop harness read them back).
TRIGGER = "mlops/trigger"  # new_data, new_predictions, drift, performance, stale_model
MODEL = "mlops/model"
LOG_COMMIT = "mlops/log_commit"  # the prediction-log commit a monitoring run read
EVIDENCE = "mlops/evidence"  # the check evaluation that triggered a retraining
CHECK = "mlops/check"
STALE_SINCE = "mlops/stale_since"


def raw_data_key(spec_name: str) -> dg.AssetKey:
    return dg.AssetKey([spec_name, "raw_data"])


def dataset_key(spec_name: str) -> dg.AssetKey:
    return dg.AssetKey([spec_name, "dataset"])


def features_key(spec_name: str) -> dg.AssetKey:
    return dg.AssetKey([spec_name, "features"])


def trained_model_key(spec_name: str) -> dg.AssetKey:
    return dg.AssetKey([spec_name, "trained_model"])


def model_evaluation_key(spec_name: str) -> dg.AssetKey:
    return dg.AssetKey([spec_name, "model_evaluation"])


def deployment_key(spec_name: str) -> dg.AssetKey:
    return dg.AssetKey([spec_name, "deployment"])


def drift_report_key(spec_name: str) -> dg.AssetKey:
    return dg.AssetKey([spec_name, "drift_report"])


def production_performance_key(spec_name: str) -> dg.AssetKey:
    return dg.AssetKey([spec_name, "production_performance"])


def prediction_log_upkeep_key(spec_name: str) -> dg.AssetKey:
    return dg.AssetKey([spec_name, "prediction_log_upkeep"])


def batch_predictions_key(spec_name: str) -> dg.AssetKey:
    return dg.AssetKey([spec_name, "batch_predictions"])


def retrain_keys(spec_name: str) -> list[dg.AssetKey]:
    """What a retraining runs: main's newest data through features, training, gate, rollout."""
    return [dg.AssetKey([spec_name, step]) for step in LOOP_STEPS]


def monitor_keys(spec_name: str) -> list[dg.AssetKey]:
    return [dg.AssetKey([spec_name, step]) for step in MONITORING_STEPS]
