"""Compare-and-set promotion, with real models in a real MLflow registry (embedded) and the
deployment asset through Dagster: a candidate gated against one champion is never promoted
over another without being compared with it."""

import dagster as dg
import pandas as pd
import pytest

from mlops_assets.defs.keys import (
    dataset_key,
    deployment_key,
    features_key,
    model_evaluation_key,
    trained_model_key,
)
from mlops_assets.serving.rollout import (
    ChampionMoved,
    Policy,
    RegistryControl,
    _promote,
    rollout,
)
from mlops_assets.store.local import LocalStore
from mlops_assets.training.history import FIRST_MODEL, AuditTrail, audit_repository
from mlops_assets.training.promotion import check_champion
from mlops_assets.training.tracking import PRODUCTION
from mlops_assets.training.train import split
from mlops_assets_tests.test_training.conftest import make_env

# On the seeded churn data (6 days x 250 rows) the holdout ROC AUC of each is about:
STRONG = {}  # the spec's forest: 0.94
WEAK = {"n_estimators": 1, "max_depth": 1}  # 0.69, under the 0.70 floor
MEDIUM = {"n_estimators": 3, "max_depth": 2}  # 0.86: passes against WEAK, not against STRONG
LINEAR = {"estimator": "linear"}  # 0.95: passes against either


def train(env, params, evaluate=True):
    cfg = {"ops": {"churn__trained_model": {"config": params}}}
    keys = [trained_model_key("churn")] + ([model_evaluation_key("churn")] if evaluate else [])
    assert env.run(keys, cfg).success
    event = env.instance.get_latest_materialization_event(trained_model_key("churn"))
    return str(event.asset_materialization.metadata["model_version"].value)


def production(env, spec):
    return str(env.client().get_model_version_by_alias(spec.model_name, PRODUCTION).version)


def test_a_stale_champion_makes_the_promotion_compare_again_and_refuse(tmp_path, monkeypatch):
    # no inference server: every refusal here happens before the rollout talks to one
    monkeypatch.setenv("MLOPS_SERVING_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("MLOPS_SERVING_TOKEN", "unused")
    env = make_env(tmp_path, monkeypatch, None)
    with dg.instance_for_test() as instance:
        env.instance = instance
        spec = env.spec("churn")
        env.seed(spec)
        assert env.run([dataset_key("churn"), features_key("churn")]).success
        v1 = train(env, STRONG)  # the first model: production through the gate
        assert production(env, spec) == v1
        v2 = train(env, WEAK, evaluate=False)
        tracking = env.tracking()
        tracking.promote(spec.model_name, v2)  # production moves to the weak v2 ...
        v3 = train(env, MEDIUM)  # ... and v3 is gated against it: passes
        tags = tracking.version(spec.model_name, v3).tags
        assert tags["gate.decision"] == "passed" and tags["gate.champion_version"] == v2
        tracking.promote(spec.model_name, v1)  # a person rolls production back to v1

        # deployment of v3: production is v1, not the v2 its gate compared it with
        result = env.run([deployment_key("churn")], raise_on_error=False)
        event = env.instance.get_latest_materialization_event(deployment_key("churn"))
        meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        assert meta["decision"] == "refused", meta["reason"]
        assert meta["candidate_version"] == v3 and meta["production_now"] == v1
        assert meta["gate_compared_with"] == v2
        reason = meta["reason"]
        assert f"production moved from v{v2} to v{v1} after the gate compared version {v3}" in (
            reason
        )
        assert f"compared again with v{v1} on the same holdout" in reason
        assert "more than 3% worse than champion" in reason and "refused" in reason
        (check,) = [
            c for c in result.get_asset_check_evaluations() if c.check_name == "rollout_healthy"
        ]
        assert not check.passed
        assert production(env, spec) == v1  # nothing moved
        tags = tracking.version(spec.model_name, v3).tags
        assert (tags["gate.regate_decision"], tags["gate.regated_against"]) == ("refused", v1)
        assert tags["gate.champion_version"] == v2  # the passing comparison stays as it was

        # the audit trail holds the first model, and no move for the refusal
        trail = AuditTrail(
            LocalStore(env.data_dir / "lakefs-local", audit_repository(spec.dataset.repository)),
            spec.model_name,
        )
        assert [(e.action, e.to_version) for e in trail.entries()] == [(FIRST_MODEL, v1)]

        # a candidate that passes against the current champion too: re-gated, may go on
        v4 = train(env, LINEAR)  # gated against v1
        tracking.promote(spec.model_name, v2)
        # the feature table as Dagster stored it: the holdout the gate used
        table = pd.read_parquet(env.data_dir / "assets" / "churn" / "features.parquet")
        x, y = split(table, spec, "holdout")
        check4 = check_champion(tracking, spec, v4, x, y)
        assert check4.ok and check4.regated and check4.champion == v2
        assert check4.compared_against == v1
        assert f"compared again with v{v2}" in check4.reason and "passes" in check4.reason
        tags = tracking.version(spec.model_name, v4).tags
        assert (tags["gate.regate_decision"], tags["gate.champion_version"]) == ("passed", v2)
        # ... and once compared with v2, v2 being production is what the rollout expects
        assert check_champion(tracking, spec, v4, x, y).regated is False

        # the set half: the rollout neither starts nor promotes once production moved
        control = RegistryControl(tracking, spec.model_name)
        policy = Policy(timeout_seconds=1, lease_seconds=5)
        moved = rollout(control, None, "churn", v4, policy, log=lambda m: None,  # type: ignore[arg-type]
                        expected_production=v1)  # fmt: skip
        assert moved.decision == "champion_moved" and f"production is {v2}, not {v1}" in (
            moved.reason
        )
        try:
            _promote(control, v4, v1, lambda m: None)  # judged beside v1, but v2 serves now
        except ChampionMoved as e:
            assert e.now == v2 and f"production moved from {v1} to {v2}" in str(e)
        else:
            raise AssertionError("promoted over a champion that moved")
        assert production(env, spec) == v2


@pytest.mark.parametrize(
    ("decision", "action", "frm", "to"),
    [
        ("promoted", "promote", "1", "2"),
        ("first_deployment", "first_model", None, "2"),
        ("rolled_back", "rollback", "2", "1"),  # the candidate withdrawn, production stays
        ("already_serving", None, None, None),
        ("champion_moved", None, None, None),
        ("refused", None, None, None),
    ],
)
def test_every_rollout_outcome_that_moves_traffic_makes_one_audit_entry(decision, action, frm, to):
    from mlops_assets.defs.deployment.assets import audit_entry
    from mlops_assets.serving.rollout import Result
    from mlops_assets.specs.model import get_spec
    from mlops_assets.training.promotion import ChampionCheck

    spec = get_spec("churn")
    before = None if decision == "first_deployment" else "1"
    result = Result(decision, "why", "2", before, candidate_stats={"requests": 80, "p95_ms": 3.0})
    tags = {
        "gate.decision": "passed",
        "gate.metric": "roc_auc",
        "gate.roc_auc": "0.93",
        "gate.champion_version": "1",
        "gate.floor": "0.7",
    }
    check = ChampionCheck(True, "2", before, before, "still v1", tags=tags)
    entry = audit_entry(spec, result, check, "run-1", "drift", "", 0.4)
    if action is None:
        assert entry is None
        return
    assert (entry.action, entry.from_version, entry.to_version) == (action, frm, to)
    assert (entry.run_id, entry.trigger, entry.reason) == ("run-1", "drift", "why")
    assert entry.evidence["gate"]["challenger"] == 0.93 and entry.evidence["drift_share"] == 0.4
    assert ("canary" in entry.evidence) is (action != "first_model")
