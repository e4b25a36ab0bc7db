"""The shared desired state and the rule every replica applies to it: pure functions, explicit
times (the lease is compared with a ``now`` the test chooses, never the clock)."""

import json
from datetime import UTC, datetime

import pytest

from mlops_assets.serving.analysis import (
    AnalysisError,
    PrometheusStats,
    ReplicaStats,
    merge,
    replica_urls,
)
from mlops_assets.serving.reconcile import (
    ROLLOUT_TAG,
    Desired,
    Rollout,
    RolloutStateError,
    deployment_for,
    reconciled,
)
from mlops_assets.serving.rollout import Policy, judge
from mlops_assets.serving.state import Deployment
from mlops_assets.settings import Settings, SettingsError
from mlops_assets_tests.processes import free_port

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()


def canary(**kw) -> Rollout:
    fields = {
        "rollout_id": "r1",
        "candidate": "2",
        "weight": 0.2,
        "mode": "canary",
        "lease_expires_at": T0 + 60,
        "production_at_start": "1",
    }
    return Rollout(**{**fields, **kw})


ALONE_1 = Deployment(production="1")


@pytest.mark.parametrize(
    ("desired", "now", "expected"),
    [
        # no rollout: production alone
        (Desired("1"), T0, ALONE_1),
        # a live canary: the candidate at its weight
        (Desired("1", canary()), T0, Deployment("1", "2", 0.2, "canary")),
        # a blue-green standby: loaded, no traffic
        (
            Desired("1", canary(weight=0.0, mode="blue_green")),
            T0 + 59.9,
            Deployment("1", "2", 0.0, "blue_green"),
        ),
        # the lease expired (the rollout's process died): production alone, by itself
        (Desired("1", canary()), T0 + 60, ALONE_1),
        (Desired("1", canary()), T0 + 3600, ALONE_1),
        # promoted (the alias moved) but the tag not yet deleted: the new production alone
        (Desired("2", canary()), T0, Deployment(production="2")),
        # the alias was moved by someone else during the rollout: that version alone
        (Desired("7", canary()), T0, Deployment(production="7")),
        # nothing in production: nothing to canary against
        (Desired(None, canary(production_at_start=None)), T0, Deployment(production=None)),
    ],
)
def test_every_replica_computes_the_same_deployment(desired, now, expected):
    assert deployment_for(desired, now) == expected


def test_the_tag_round_trips_and_a_broken_tag_means_production_alone():
    r = canary()
    assert Rollout.from_json(r.to_json()) == r
    assert Desired.from_registry("1", {ROLLOUT_TAG: r.to_json(), "other": "x"}).rollout == r

    broken = Desired.from_registry("1", {ROLLOUT_TAG: "{not json"})
    assert broken.rollout is None and "not JSON" in broken.problem
    assert reconciled(broken, T0) == ALONE_1

    missing = json.dumps({k: v for k, v in json.loads(r.to_json()).items() if k != "candidate"})
    problem = Desired.from_registry("1", {ROLLOUT_TAG: missing}).problem
    assert "'candidate'" in problem and "delete the tag" in problem

    with pytest.raises(RolloutStateError, match="mode 'single'"):
        canary(mode="single")
    with pytest.raises(RolloutStateError, match=r"weight 1\.5"):
        canary(weight=1.5)


def test_a_bare_version_from_a_plain_resolver_is_production_alone():
    assert reconciled("3", T0) == Deployment(production="3")
    assert reconciled(None, T0) == Deployment(production=None)


def test_renewing_the_lease_keeps_everything_else():
    r = canary().renewed(T0 + 600)
    assert r.lease_expires_at == T0 + 600 and r.candidate == "2" and r.rollout_id == "r1"
    assert deployment_for(Desired("1", r), T0 + 300).candidate == "2"


def test_windows_of_several_replicas_merge_into_one():
    a = {"requests": 100, "errors": 0, "p95_ms": 10.0, "mean_prediction": 0.2}
    b = {"requests": 50, "errors": 5, "p95_ms": 30.0, "mean_prediction": 0.5}
    m = merge([a, b])
    assert (m["requests"], m["errors"], m["replicas"]) == (150, 5, 2)
    assert m["error_rate"] == pytest.approx(5 / 150)
    assert m["p95_ms"] == 30.0  # the slowest replica's p95 bounds the pooled one
    # the mean over answered requests: (100 * 0.2 + 45 * 0.5) / 145
    assert m["mean_prediction"] == pytest.approx((100 * 0.2 + 45 * 0.5) / 145)
    assert merge([]) == {
        "requests": 0,
        "errors": 0,
        "error_rate": 0.0,
        "p95_ms": None,
        "mean_prediction": None,
        "replicas": 0,
        "latency_le_ms": None,
    }


def test_a_merged_window_with_one_slow_replica_is_judged_slow():
    fast = {"requests": 200, "errors": 0, "p95_ms": 5.0, "mean_prediction": 0.3}
    slow = {"requests": 200, "errors": 0, "p95_ms": 500.0, "mean_prediction": 0.3}
    ok, reason = judge(Policy(window_requests=300, max_p95_ms=100), merge([fast, slow]), None)
    assert not ok and "p95 latency 500.0 ms" in reason


def test_replica_urls_resolve_dns_entries_to_every_address():
    assert replica_urls(["http://a:1/", "http://b:2", "http://a:1"]) == ["http://a:1", "http://b:2"]
    assert "http://127.0.0.1:8080" in replica_urls(["dns+http://localhost:8080"])
    with pytest.raises(AnalysisError, match="does not resolve"):
        replica_urls(["dns+http://no-such-host.invalid:8080"])


def test_settings_read_the_replicas_prometheus_and_lease():
    s = Settings.from_env(
        {
            "MLOPS_SERVING_REPLICAS": "http://r1:8080, http://r2:8080,",
            "MLOPS_PROMETHEUS_URL": "http://prometheus:9090",
            "MLOPS_ROLLOUT_LEASE_SECONDS": "30",
        }
    )
    assert s.serving_replicas == ("http://r1:8080", "http://r2:8080")
    assert (s.prometheus_url, s.rollout_lease_seconds) == ("http://prometheus:9090", 30.0)
    assert s.prometheus_selector == 'job="mlops-inference"'
    assert Settings.from_env({}).serving_replicas == ()
    with pytest.raises(SettingsError, match="MLOPS_ROLLOUT_LEASE_SECONDS"):
        Settings.from_env({"MLOPS_ROLLOUT_LEASE_SECONDS": "0"})


def test_an_unreachable_replica_or_prometheus_is_an_error_never_a_partial_view():
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(AnalysisError, match=f"replica {down} could not be read"):
        ReplicaStats([down], "token", timeout=2).stats("churn", T0)
    assert (
        ReplicaStats([down], "token", timeout=2)
        .lagging("churn", ALONE_1)[0]
        .startswith(f"{down}: unreachable")
    )
    with pytest.raises(AnalysisError, match="did not answer"):
        PrometheusStats(down, timeout=2).stats("churn", T0, now=T0 + 60)
    with pytest.raises(AnalysisError, match="no replicas"):
        ReplicaStats([]).stats("churn", T0)
