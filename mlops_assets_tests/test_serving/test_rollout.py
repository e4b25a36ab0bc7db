"""Canary and blue-green rollouts through the registry's shared desired state, against a real
replica (``mlops serve`` reconciling every 0.5 s) and the real MLflow server: promote, or roll
back by itself; never stuck when the registry fails during the switch."""

import pytest

from mlops_assets.serving.analysis import ReplicaStats
from mlops_assets.serving.client import Replay, ServingClient
from mlops_assets.serving.reconcile import ROLLOUT_TAG, Rollout
from mlops_assets.serving.rollout import Policy, RegistryControl, RolloutBusy, judge, rollout
from mlops_assets.specs.model import get_spec
from mlops_assets.training.tracking import PRODUCTION, Tracking, TrackingUnavailable
from mlops_assets_tests.processes import BIN, free_port, start, stop, wait_until
from mlops_assets_tests.test_serving.conftest import TOKEN, _ready, serve_env

# The first test also pays for the session's registry (five versions trained and logged to
# the real MLflow server): minutes on a loaded 2-core machine, over the suite's 300 s default.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def replica(registry, tmp_path_factory):
    """One real server that reconciles to the registry twice a second."""
    port = free_port()
    log = tmp_path_factory.mktemp("rollout") / "serve.log"
    cmd = [str(BIN / "mlops"), "serve", "--port", str(port), "--poll-seconds", "0.5"]
    proc = start(cmd, serve_env(registry), log)
    url = f"http://127.0.0.1:{port}"
    wait_until("inference server", lambda: _ready(url), 120, proc, log)
    yield ServingClient(url, TOKEN)
    stop(proc)


@pytest.fixture
def control(registry, replica):
    """Every test starts (and ends) with the champion alone, in the registry and served."""
    tracking = Tracking(registry.tracking_uri)
    tracking.configure()
    name = get_spec("churn", registry.specs_dir).model_name
    ctl = RegistryControl(tracking, name)

    def reset():
        tracking.delete_model_tag(name, ROLLOUT_TAG)
        tracking.set_alias(name, PRODUCTION, registry.versions[("churn", "champion")])
        alone = {"production": registry.versions[("churn", "champion")], "candidate": None}
        wait_until(
            "champion alone",
            lambda: {k: replica.deployment("churn")[k] for k in alone} == alone,
            60,
        )

    reset()
    yield ctl
    reset()


def run(ctl, replica, registry, role, **policy):
    def traffic(version):
        return Replay(replica, "churn", registry.holdout["churn"], threads=3, version=version)

    return rollout(
        ctl,
        ReplicaStats([replica.url], TOKEN),
        "churn",
        registry.versions[("churn", role)],
        # Two forests' mean probability over 60 random rows each differs by chance by up to
        # ~50 %: the shift bound is not what these tests judge.
        Policy(
            **{
                "window_requests": 60,
                "timeout_seconds": 60,
                "lease_seconds": 20,
                "max_prediction_shift": 3.0,
                **policy,
            }
        ),
        traffic=traffic,
        log=lambda m: None,
    )


@pytest.mark.parametrize("strategy", ["canary", "blue_green"])
def test_a_healthy_challenger_is_promoted(control, replica, registry, strategy):
    challenger = registry.versions[("churn", "challenger")]
    result = run(control, replica, registry, "challenger", strategy=strategy, canary_weight=0.5)
    assert result.decision == "promoted", result.reason
    assert result.candidate_stats["requests"] >= 60
    assert result.candidate_stats["errors"] == 0
    assert result.lagging == []
    desired = control.desired()
    assert (desired.production, desired.rollout) == (challenger, None)  # the tag is gone
    assert replica.deployment("churn") == {
        "production": challenger,
        "candidate": None,
        "weight": 0.0,
        "mode": "single",
    }
    # promotion is idempotent: a second run finds it serving and changes nothing
    again = run(control, replica, registry, "challenger", strategy=strategy)
    assert again.decision == "already_serving"
    assert control.desired().production == challenger


def test_a_failing_canary_is_rolled_back_and_the_champion_keeps_serving(control, replica, registry):
    champion = registry.versions[("churn", "champion")]
    result = run(control, replica, registry, "faulty", canary_weight=0.5)
    assert result.decision == "rolled_back"
    assert "error rate" in result.reason and result.candidate_stats["errors"] > 0
    desired = control.desired()
    assert (desired.production, desired.rollout) == (champion, None)  # no alias touched
    assert replica.deployment("churn") == {
        "production": champion,
        "candidate": None,
        "weight": 0.0,
        "mode": "single",
    }
    answer = replica.predict("churn", registry.holdout["churn"][:1])
    assert (answer["status"], answer["model_version"]) == (200, champion)


def test_a_slow_canary_is_rolled_back(control, replica, registry):
    # 2,500 unpruned trees against the champion's 150 of depth 10: measured here ~75 ms
    # against ~7 ms per single-row prediction, so a 40 ms bound sits well clear of both.
    result = run(control, replica, registry, "slow", canary_weight=0.5, max_p95_ms=40)
    assert result.decision == "rolled_back"
    assert "p95 latency" in result.reason
    assert control.desired().production == registry.versions[("churn", "champion")]


# The sequential test decides before this many requests: it is only the most it waits for.
MAX_WINDOW = 5000


def test_the_sequential_test_promotes_a_healthy_canary_on_the_evidence(control, replica, registry):
    result = run(
        control, replica, registry, "challenger", canary_weight=0.5,
        window_requests=MAX_WINDOW, timeout_seconds=240,
    )  # fmt: skip
    assert result.decision == "promoted", result.reason
    assert result.reason.startswith("sequential test:"), result.reason
    n = result.candidate_stats["requests"]
    assert 332 <= n < MAX_WINDOW  # 332 clean requests are the evidence at 1 % and 5 %
    assert control.desired().production == registry.versions[("churn", "challenger")]


@pytest.mark.parametrize(
    ("role", "policy", "said"),
    [
        ("faulty", {}, "requests failed, evidence that the error rate is 1.0% or more"),
        ("slow", {"max_p95_ms": 40}, "evidence that the p95 latency is above 40 ms"),
        ("shifted", {"max_prediction_shift": 0.5}, "away from production's"),
    ],
)
def test_the_sequential_test_rolls_back_a_failing_a_slow_and_a_shifted_canary_early(
    control, replica, registry, role, policy, said
):
    result = run(
        control, replica, registry, role, canary_weight=0.5, window_requests=MAX_WINDOW,
        timeout_seconds=240, **policy,
    )  # fmt: skip
    assert result.decision == "rolled_back", result.reason
    assert said in result.reason, result.reason
    assert "fixed-window rule" not in result.reason  # the sequential test decided, early
    assert result.candidate_stats["requests"] < 1000
    assert control.desired().production == registry.versions[("churn", "champion")]
    assert control.desired().rollout is None


def test_registry_down_while_moving_the_alias_leaves_production_serving(control, replica, registry):
    """The alias move fails for real (a registry that refuses connections): the rollout
    raises, deletes its tag, and the replica is back on the champion alone."""
    champion = registry.versions[("churn", "champion")]
    dead = Tracking(f"http://127.0.0.1:{free_port()}", max_retries=0, timeout_seconds=2)

    class DeadAliasMove(RegistryControl):
        def promote(self, version):  # the write goes to a registry that is down
            dead.promote(self.model_name, version)

    ctl = DeadAliasMove(control.tracking, control.model_name)
    with pytest.raises(RuntimeError, match="moving the production alias") as e:
        run(ctl, replica, registry, "challenger", canary_weight=0.5)
    assert isinstance(e.value.__cause__, TrackingUnavailable)
    assert f"the alias names {champion}" in str(e.value)
    desired = control.desired()
    assert (desired.production, desired.rollout) == (champion, None)
    wait_until(
        "champion alone after the failed switch",
        lambda: replica.deployment("churn")["candidate"] is None,
        60,
    )
    assert replica.deployment("churn")["production"] == champion


def test_a_live_lease_of_another_rollout_is_refused_and_an_expired_one_taken_over(
    control, replica, registry
):
    champion = registry.versions[("churn", "champion")]
    other = Rollout("other", registry.versions[("churn", "third")], 0.1, "canary", 0, champion)
    control.write(other.renewed(4_102_444_800))  # 2100-01-01: live for this test
    with pytest.raises(RolloutBusy, match="rollout other of version"):
        run(control, replica, registry, "challenger")
    assert control.desired().rollout.rollout_id == "other"  # not touched by the refusal

    control.write(other.renewed(946_684_800))  # 2000-01-01: long expired
    result = run(control, replica, registry, "challenger", canary_weight=0.5)
    assert result.decision == "promoted", result.reason


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
