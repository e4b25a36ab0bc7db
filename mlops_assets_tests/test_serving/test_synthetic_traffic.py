"""Synthetic traffic (holdout replay, smoke tests, benchmarks) is logged as such and never
enters the windows monitoring computes drift and live performance on."""

import datetime as dt
import os
import signal

import httpx

from mlops_assets.demo.traffic import send_traffic
from mlops_assets.monitoring.windows import current_window, served_rows
from mlops_assets.serving.predlog import predictions_repository, read_rows
from mlops_assets.specs.model import get_spec
from mlops_assets.store.local import LocalStore
from mlops_assets_tests.processes import wait_until
from mlops_assets_tests.test_serving.conftest import TOKEN, start_server

DAY = dt.date(2026, 11, 20)


def test_replayed_and_smoke_traffic_never_enter_the_monitoring_window(registry, tmp_path):
    data_dir = tmp_path / "data"
    spec = get_spec("churn", registry.specs_dir)
    champion = registry.versions[("churn", "champion")]
    challenger = registry.versions[("churn", "challenger")]
    proc, url = start_server(registry, tmp_path / "serve.log", MLOPS_DATA_DIR=str(data_dir))
    admin = {"Authorization": f"Bearer {TOKEN}"}
    try:
        # a rollout: the candidate beside production, smoke-tested pinned, then a canary that
        # the holdout replay feeds, then the way back to production alone
        deploy = f"{url}/admin/deployments/churn"
        state = {"production": champion, "candidate": challenger, "weight": 0.0}
        assert httpx.put(deploy, json={**state, "mode": "blue_green"}, headers=admin).is_success
        smoke = {**admin, "X-Model-Version": challenger, "X-Mlops-Synthetic": "smoke"}
        for row in registry.holdout["churn"][:5]:
            r = httpx.post(
                f"{url}/predict", json={"model": "churn", "records": [row]}, headers=smoke
            )
            assert r.status_code == 200 and r.json()["model_version"] == challenger
        canary = {**state, "weight": 0.5, "mode": "canary"}
        assert httpx.put(deploy, json=canary, headers=admin).is_success
        replay = send_traffic(url, spec, DAY, rows=60, batch=3, seed=5, synthetic="replay")
        assert not replay.errors and set(replay.versions) == {champion, challenger}
        assert httpx.put(deploy, json={"production": champion}, headers=admin).is_success

        # then real clients
        real = send_traffic(url, spec, DAY, rows=40, batch=2, seed=6)
        assert not real.errors and real.versions == {champion: 40}
        # an unknown marker is refused, naming the header
        r = httpx.post(
            f"{url}/predict",
            json={"model": "churn", "records": registry.holdout["churn"][:1]},
            headers={"X-Mlops-Synthetic": "yes"},
        )
        assert r.status_code == 422 and r.json()["field"] == "X-Mlops-Synthetic"
        os.killpg(proc.pid, signal.SIGTERM)  # a clean stop commits every segment
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    store = LocalStore(data_dir / "lakefs-local", predictions_repository(spec.dataset.repository))
    logged = []
    for path in store.list("main", "predictions/churn/"):
        logged += read_rows(store.get("main", path))
    kinds = {}
    for row in logged:
        kinds[row["synthetic"]] = kinds.get(row["synthetic"], 0) + 1
    assert kinds == {"smoke": 5, "replay": 60, None: 40}  # everything logged, marked

    real_ids = {label["request_id"] for label in real.labels}
    window = current_window(store, spec, champion, rows=1000)
    assert len(window) == 40  # only real traffic, although 30-odd replayed rows hit champion
    served = list(served_rows(store, spec, champion))
    assert {r["request_id"] for r in served} == real_ids
    assert list(served_rows(store, spec, challenger)) == []  # replay and smoke only


def test_a_rollout_with_replay_then_real_clients_leaves_only_real_rows_in_the_window(
    registry, tmp_path
):
    """The real rollout (registry desired state, a replica reconciling every 0.5 s) fed by the
    product's holdout Replay, then real clients: the drift window of the promoted version
    holds the real clients' rows only, although the replay was answered by it too, and the
    drift report computed on that window raises no alarm."""
    from mlops_assets.serving.analysis import ReplicaStats
    from mlops_assets.serving.client import Replay, ServingClient
    from mlops_assets.serving.rollout import Policy, RegistryControl, rollout
    from mlops_assets.training.tracking import Tracking
    from mlops_assets_tests.test_serving.test_input_isolation import (
        _copy_specs,
        _register_copy,
        _start,
    )

    name = f"churn-syn-{tmp_path.name[-12:].replace('_', '-')}"
    source = get_spec("churn", registry.specs_dir).model_name
    tracking = Tracking(registry.tracking_uri)
    tracking.configure()
    first = _register_copy(
        registry.tracking_uri, source, registry.versions[("churn", "champion")], name
    )
    tracking.promote(name, first)
    second = _register_copy(
        registry.tracking_uri, source, registry.versions[("churn", "challenger")], name
    )
    specs_dir = _copy_specs(registry, tmp_path, rename={"churn": name})
    spec = get_spec("churn", specs_dir)
    proc, url = _start(registry, tmp_path, specs_dir, 0.5, "")
    replica = ServingClient(url, TOKEN)
    try:

        def traffic(version):
            return Replay(replica, "churn", registry.holdout["churn"], threads=2, version=version)

        result = rollout(
            RegistryControl(tracking, name),
            ReplicaStats([url], TOKEN),
            "churn",
            second,
            Policy(window_requests=40, timeout_seconds=90, lease_seconds=30,
                   max_prediction_shift=3.0),
            traffic=traffic,
            log=lambda m: None,
        )  # fmt: skip
        assert result.decision == "promoted", result.reason

        def serves_second_alone() -> bool:
            d = replica.deployment("churn")
            return d["production"] == second and d["candidate"] is None

        wait_until("the promotion served", serves_second_alone, 60, proc, tmp_path / "serve.log")
        real = send_traffic(url, spec, DAY, rows=120, batch=3, seed=7)
        assert not real.errors and real.versions == {second: 120}
        os.killpg(proc.pid, signal.SIGTERM)  # a clean stop commits every segment
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    store = LocalStore(
        tmp_path / "data" / "lakefs-local", predictions_repository(spec.dataset.repository)
    )
    logged = []
    for path in store.list("main", "predictions/churn/"):
        logged += read_rows(store.get("main", path))
    replayed = [r for r in logged if r["model_version"] == second and r["synthetic"]]
    assert len(replayed) >= 40  # the candidate's window was filled by the replay
    assert {r["synthetic"] for r in replayed} <= {"replay", "smoke"}  # routed, and pinned
    window = current_window(store, spec, second, rows=10_000)
    assert len(window) == 120
    assert {r["request_id"] for r in served_rows(store, spec, second)} == {
        label["request_id"] for label in real.labels
    }

    # and the drift report drift_report computes on it (its defaults: 1,000 newest rows, at
    # least 100, warn at a 30 % drifted share): real traffic like the training data, no alarm
    from mlops_assets.defs.monitoring.assets import DriftConfig
    from mlops_assets.monitoring.drift import compute_drift, judge, reference_frame
    from mlops_assets.training.pipeline import spec_types

    config = DriftConfig()
    data = LocalStore(registry.data_dir / "lakefs-local", spec.dataset.repository)
    model = tracking.load_model(name, second, spec_types(spec))
    reference = reference_frame(data, spec, data.head("main"), model)
    current = current_window(store, spec, second, config.window_rows)
    assert config.min_rows <= len(current) == 120
    result = compute_drift(reference, current.drop(columns=["timestamp"]), spec, html=False)
    verdict = judge(result, config.warn_share, config.error_share)
    assert verdict.passed, verdict.description
