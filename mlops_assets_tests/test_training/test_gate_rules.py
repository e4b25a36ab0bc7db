"""The gate's thresholds come from the reviewed spec: run config may only tighten them, and
anything looser is refused before training, naming the field."""

import math

import pytest

from mlops_assets.specs import EvaluationSpec
from mlops_assets.training.gate import RUN_CONFIG, SPEC, GateLoosened, thresholds

AUC = EvaluationSpec(metric="roc_auc", floor=0.70, tolerance=0.03)
RMSE = EvaluationSpec(metric="rmse", floor=20.0, tolerance=0.03)


def test_no_override_applies_the_spec_and_says_so():
    t = thresholds("churn", AUC)
    assert (t.floor, t.tolerance) == (0.70, 0.03)
    assert (t.floor_source, t.tolerance_source) == (SPEC, SPEC)
    assert t.describe() == "roc_auc: floor 0.7 (spec), tolerance 0.03 (spec)"
    # the spec's own values given again in run config are the spec's
    same = thresholds("churn", AUC, floor=0.70, tolerance=0.03)
    assert (same.floor_source, same.tolerance_source) == (SPEC, SPEC)


@pytest.mark.parametrize(
    ("reviewed", "floor", "tolerance"),
    [(AUC, 0.8, 0.01), (AUC, 0.70, 0.0), (RMSE, 15.0, 0.02)],  # rmse: a LOWER floor is stricter
)
def test_tightening_is_accepted_and_recorded_as_run_config(reviewed, floor, tolerance):
    t = thresholds("m", reviewed, floor=floor, tolerance=tolerance)
    assert (t.floor, t.tolerance) == (floor, tolerance)
    assert t.floor_source == (SPEC if floor == reviewed.floor else RUN_CONFIG)
    assert t.tolerance_source == RUN_CONFIG
    assert t.as_dict()["floor"] == {
        "value": floor,
        "source": t.floor_source,
        "spec": reviewed.floor,
    }
    assert t.tags()["gate.tolerance_source"] == RUN_CONFIG


@pytest.mark.parametrize(
    ("reviewed", "floor", "tolerance", "field", "phrase"),
    [
        (AUC, 0.0, None, "floor", "may only raise it (give a value >= 0.7)"),  # the case
        (AUC, None, 0.99, "tolerance", "between 0 and 0.03"),
        (AUC, 0.69, None, "floor", "may only raise it"),
        (AUC, math.nan, None, "floor", "nan"),
        (AUC, math.inf, None, "floor", "inf"),
        (AUC, None, -0.01, "tolerance", "between 0 and 0.03"),
        (RMSE, 25.0, None, "floor", "may only lower it (give a value <= 20)"),
    ],
)
def test_loosening_is_refused_naming_the_field_the_spec_value_and_the_fix(
    reviewed, floor, tolerance, field, phrase
):
    with pytest.raises(GateLoosened) as e:
        thresholds("churn", reviewed, floor=floor, tolerance=tolerance)
    msg = str(e.value)
    assert f"field '{field}'" in msg and phrase in msg
    assert "would loosen the promotion gate of 'churn'" in msg
    assert f"evaluation.{field} in the spec 'churn'" in msg and "reviewed" in msg


def test_a_loosened_gate_is_refused_before_training_and_a_tightened_one_is_recorded(embedded_env):
    """The issue's case: 1 tree of depth 1 launched with floor 0.0 and tolerance 0.99. The run
    stops at trained_model, before any fit: nothing is logged or registered."""
    from mlops_assets.defs.keys import (
        dataset_key,
        features_key,
        model_evaluation_key,
        trained_model_key,
    )

    env = embedded_env
    spec = env.spec("churn")
    env.seed(spec)
    keys = [dataset_key("churn"), features_key("churn"), trained_model_key("churn")]
    keys.append(model_evaluation_key("churn"))
    loose = {
        "ops": {
            "churn__trained_model": {"config": {"n_estimators": 1, "max_depth": 1}},
            "churn__model_evaluation": {"config": {"floor": 0.0, "tolerance": 0.99}},
        }
    }
    result = env.run(keys, loose, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "churn__trained_model"
    text = str(failure.event_specific_data.error)
    assert "field 'floor' = 0.0 would loosen the promotion gate" in text, text
    assert "checked before training" in text
    tracking = env.tracking()
    assert tracking.versions(spec.model_name) == []  # nothing trained, nothing registered
    assert env.instance.get_latest_materialization_event(trained_model_key("churn")) is None

    tight = {"ops": {"churn__model_evaluation": {"config": {"floor": 0.71}}}}
    assert env.run(keys, tight).success
    event = env.instance.get_latest_materialization_event(model_evaluation_key("churn"))
    meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert meta["floor"] == 0.71 and meta["tolerance"] == 0.03
    assert (meta["floor_source"], meta["tolerance_source"]) == ("run config", "spec")
    assert meta["thresholds"] == (
        "roc_auc: floor 0.71 (run config, tightened from the spec's 0.7), tolerance 0.03 (spec)"
    )
    (version,) = tracking.versions(spec.model_name)
    assert version.tags["gate.floor_source"] == "run config"
    assert float(version.tags["gate.floor"]) == 0.71
    assert version.tags["gate.dagster_run_id"] == meta["dagster_run_id"]
