"""Canary and blue-green rollouts against the real server: promote, or roll back by itself."""

import pytest

from mlops_assets.serving.client import Replay
from mlops_assets.serving.rollout import Policy, judge, rollout
from mlops_assets.training.tracking import PRODUCTION, Tracking


def run(client, registry, role, **policy):
    versions = registry.versions
    tracking = Tracking(registry.tracking_uri)
    promoted = []

    def traffic(version):
        return Replay(client, "churn", registry.holdout["churn"], threads=3, version=version)

    result = rollout(
        client,
        "churn",
        versions[("churn", role)],
        Policy(**{"window_requests": 60, "timeout_seconds": 60, **policy}),
        promote_alias=promoted.append,
        traffic=traffic,
        log=lambda m: None,
    )
    return result, promoted, tracking


@pytest.mark.parametrize("strategy", ["canary", "blue_green"])
def test_a_healthy_challenger_is_promoted(client, registry, strategy):
    result, promoted, _ = run(client, registry, "challenger", strategy=strategy, canary_weight=0.5)
    challenger = registry.versions[("churn", "challenger")]
    assert result.decision == "promoted", result.reason
    assert promoted == [challenger]
    assert result.candidate_stats["requests"] >= 60
    assert result.candidate_stats["errors"] == 0
    state = client.deployment("churn")
    assert state["production"] == challenger
    if strategy == "blue_green":  # the old version stays loaded, idle, as the way back
        assert state["candidate"] == registry.versions[("churn", "champion")]
        assert state["weight"] == 0.0


def test_a_failing_canary_is_rolled_back_and_the_champion_keeps_serving(client, registry):
    champion = registry.versions[("churn", "champion")]
    result, promoted, _ = run(client, registry, "faulty", canary_weight=0.5)
    assert result.decision == "rolled_back"
    assert "error rate" in result.reason and result.candidate_stats["errors"] > 0
    assert promoted == []
    assert client.deployment("churn") == {
        "production": champion,
        "candidate": None,
        "weight": 0.0,
        "mode": "single",
    }
    answer = client.predict("churn", registry.holdout["churn"][:1])
    assert (answer["status"], answer["model_version"]) == (200, champion)


def test_a_slow_canary_is_rolled_back(client, registry):
    # 2,500 unpruned trees against the champion's 150 of depth 10: measured here ~75 ms
    # against ~7 ms per single-row prediction, so a 40 ms bound sits well clear of both.
    result, promoted, _ = run(client, registry, "slow", canary_weight=0.5, max_p95_ms=40)
    assert result.decision == "rolled_back"
    assert "p95 latency" in result.reason
    assert promoted == []
    assert client.deployment("churn")["production"] == registry.versions[("churn", "champion")]


def test_judge_refuses_without_enough_evidence_and_on_a_prediction_shift():
    policy = Policy(window_requests=100, max_prediction_shift=0.1)
    few = {"requests": 5, "errors": 0, "error_rate": 0.0, "p95_ms": 3.0, "mean_prediction": 0.2}
    ok, reason = judge(policy, few, None)
    assert not ok and "5 of the 100 requests" in reason
    shifted = {**few, "requests": 100, "mean_prediction": 0.4}
    ok, reason = judge(policy, shifted, {"mean_prediction": 0.2})
    assert not ok and "100% away" in reason
    ok, _ = judge(policy, {**shifted, "mean_prediction": 0.21}, {"mean_prediction": 0.2})
    assert ok


def test_no_alias_is_touched_by_a_rollback(client, registry):
    tracking = Tracking(registry.tracking_uri)
    tracking.configure()
    from mlops_assets.specs.model import get_spec

    name = get_spec("churn", registry.specs_dir).model_name
    before = tracking.version_by_alias(name, PRODUCTION).version
    result, _, _ = run(client, registry, "faulty", canary_weight=0.5)
    assert result.decision == "rolled_back"
    assert tracking.version_by_alias(name, PRODUCTION).version == before
