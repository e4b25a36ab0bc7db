"""Multiclass end to end, with real components: two multiclass models (the demo's ``tickets``,
text labels, and scikit-learn's wine data as the test's own CSV batches, integer labels) are
ingested, trained and gated through the Dagster assets with a real MLflow server, served by the
real inference server over HTTP (/predict and V2), sent simulated traffic whose labels arrive
later, and watched: the drift report compares the predicted class and each probability, live
performance scores the delayed labels with the gate's metric.

The opt-in demo spec lives in mlops_assets/demo/specs/, outside the packaged folder, so the
default demo and the suite's other end-to-end tests stay at two models; this test is where the
loop runs on it.
"""

import datetime as dt
import uuid

import dagster as dg
import httpx
import orjson
import pytest
import yaml

from mlops_assets.defs.keys import (
    dataset_key,
    deployment_key,
    drift_report_key,
    features_key,
    model_evaluation_key,
    production_performance_key,
    trained_model_key,
)
from mlops_assets.demo import DEMO_SPECS_DIR
from mlops_assets.demo.simulator import simulate_batch
from mlops_assets.demo.traffic import send_traffic
from mlops_assets.monitoring.labels import commit_labels, labels_repository
from mlops_assets.monitoring.windows import current_window
from mlops_assets.serving.predlog import predictions_repository
from mlops_assets.store.local import LocalStore
from mlops_assets.training.train import records
from mlops_assets_tests.conftest import pin_mlflow_http_env
from mlops_assets_tests.processes import BIN, free_port, start, stop, wait_until
from mlops_assets_tests.servers import server_env
from mlops_assets_tests.test_training.conftest import Env
from mlops_assets_tests.test_training.test_multiclass import ingest_wine, write_wine_spec

pytestmark = pytest.mark.e2e

TOKEN = "multiclass-admin-token"
TRAFFIC_DAY = dt.date(2026, 12, 10)  # explicit: the test never depends on the calendar


@pytest.fixture
def env(tmp_path, monkeypatch, mlflow_server):
    """Definitions of the two multiclass specs only, each with a registered model of its own."""
    specs = tmp_path / "specs"
    tag = uuid.uuid4().hex[:8]
    write_wine_spec(specs)
    for f in (specs / "wine.yaml", DEMO_SPECS_DIR / "tickets.yaml"):
        data = yaml.safe_load(f.read_text())
        data["registered_model"] = f"{data['name']}-{tag}"
        (specs / f.name).write_text(yaml.safe_dump(data, sort_keys=False))
    data_dir = tmp_path / "data"
    # the server this test starts: the deployment and monitoring assets talk to it
    port = free_port()
    monkeypatch.setenv("MLOPS_SERVING_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLOPS_SERVING_TOKEN", TOKEN)
    monkeypatch.setenv("MLOPS_DATA_DIR", str(data_dir))
    monkeypatch.setenv("MLOPS_SPECS_DIR", str(specs))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    for var in ("MLOPS_DATA_BACKEND", "MLFLOW_UI_URL"):
        monkeypatch.delenv(var, raising=False)
    pin_mlflow_http_env(monkeypatch)
    from mlops_assets.definitions import defs

    with dg.instance_for_test() as instance:
        yield Env(defs(), instance, str(specs), data_dir, mlflow_server.url)


def _meta(env: Env, key) -> dict:
    event = env.instance.get_latest_materialization_event(key)
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _check(result, name: str):
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == name]
    return check


def _serve(env: Env, log):
    import os

    port = int(os.environ["MLOPS_SERVING_URL"].rsplit(":", 1)[1])
    extra = server_env(
        MLFLOW_TRACKING_URI=env.tracking_uri,
        MLOPS_SPECS_DIR=env.specs_dir,
        MLOPS_DATA_DIR=str(env.data_dir),
        MLOPS_SERVING_TOKEN=TOKEN,
        MLOPS_LOG_SEGMENT_SECONDS="1",  # rows reach the committed log within a second or so
    )
    extra = {k: v for k, v in extra.items() if not k.startswith(("MLOPS_DATA_BACKEND", "LAKEFS_"))}
    # it reconciles to the registry's shared desired state, as a rollout needs
    cmd = [str(BIN / "mlops"), "serve", "--port", str(port), "--poll-seconds", "0.5"]
    proc = start(cmd, extra, log)
    url = f"http://127.0.0.1:{port}"

    def ready():
        try:
            return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:  # not listening yet
            return False

    wait_until("inference server", ready, 120, proc, log)
    return proc, url


@pytest.mark.timeout(900)
def test_multiclass_models_train_gate_serve_and_are_monitored(env, tmp_path):
    tickets, wine = env.spec("tickets"), env.spec("wine")
    env.seed(tickets, days=6, rows=250)
    ingest_wine(env.store(wine), wine)

    # ---- trained and gated through the assets, with a real MLflow server
    keys = []
    for name in ("tickets", "wine"):
        keys += [dataset_key(name), features_key(name), trained_model_key(name)]
        keys += [model_evaluation_key(name)]
    assert env.run(keys).success
    for spec in (tickets, wine):
        trained = _meta(env, trained_model_key(spec.name))
        assert {"accuracy", "f1_macro", "roc_auc_ovr", "log_loss"} <= set(trained), trained
        assert "decision_threshold" not in trained
        gated = _meta(env, model_evaluation_key(spec.name))
        metric = spec.evaluation.metric
        assert gated["decision"] == "passed", gated
        assert gated[f"challenger_{metric}"] >= spec.evaluation.floor + 0.05, gated
        version = env.tracking().version_by_alias(spec.model_name, "production")
        assert version is not None and version.version == "1"
        # no ONNX converter for a multiclass model here: it serves with skops, and says why
        assert version.tags.get("onnx.parity") != "passed"

    proc, url = _serve(env, tmp_path / "serve.log")
    try:
        # ---- /predict: the class and P(class) per class, by name
        # rows the server has not seen: a new simulated day
        frame = simulate_batch("tickets", TRAFFIC_DAY, rows=20, seed=9)
        body = {"model": "tickets", "records": records(frame, tickets)}
        answer = httpx.post(f"{url}/predict", json=body, timeout=30).json()
        assert answer["model_version"] == "1"
        teams = {"account", "billing", "technical"}
        assert set(answer["predictions"]) <= teams and len(answer["predictions"]) == 20
        for label, proba in zip(answer["predictions"], answer["probabilities"], strict=True):
            assert set(proba) == teams
            assert sum(proba.values()) == pytest.approx(1.0)
            assert label == max(proba, key=proba.get)
        # the answers are useful: most of a new day's tickets go to the right team
        right = sum(p == t for p, t in zip(answer["predictions"], frame["team"], strict=True))
        assert right >= 12, (answer["predictions"], frame["team"].tolist())

        # ---- V2: the class as `predict`, one `predict_proba_<class>` tensor per class
        meta = httpx.get(f"{url}/v2/models/wine", timeout=10).json()
        assert [o["name"] for o in meta["outputs"]] == [
            "predict",
            "predict_proba_0",
            "predict_proba_1",
            "predict_proba_2",
        ]
        assert meta["outputs"][0]["datatype"] == "INT64"
        assert meta["parameters"]["runtimes"] == {"1": "skops"}
        wine_rows = records(_wine_rows(env, wine), wine)[:5]
        inputs = [
            {"name": f, "datatype": "FP64", "shape": [5], "data": [r[f] for r in wine_rows]}
            for f in wine.features
        ]
        v2 = httpx.post(f"{url}/v2/models/wine/infer", json={"inputs": inputs}, timeout=30)
        assert v2.status_code == 200, v2.text
        outputs = {o["name"]: o for o in v2.json()["outputs"]}
        assert set(outputs) == {"predict", "predict_proba_0", "predict_proba_1", "predict_proba_2"}
        assert outputs["predict"]["datatype"] == "INT64"
        for i in range(5):
            row = [outputs[f"predict_proba_{c}"]["data"][i] for c in (0, 1, 2)]
            assert sum(row) == pytest.approx(1.0)
            assert outputs["predict"]["data"][i] == row.index(max(row))
        # text labels: `predict` is BYTES, the outputs are named after the teams
        tickets_rows = records(frame, tickets)[:3]
        inputs = [
            {
                "name": f,
                "datatype": "FP64" if f in tickets.numeric_features else "BYTES",
                "shape": [3],
                "data": [r[f] for r in tickets_rows],
            }
            for f in tickets.features
        ]
        v2 = httpx.post(f"{url}/v2/models/tickets/infer", json={"inputs": inputs}, timeout=30)
        assert v2.status_code == 200, v2.text
        outputs = {o["name"]: o for o in v2.json()["outputs"]}
        assert outputs["predict"]["datatype"] == "BYTES"
        assert outputs["predict"]["data"] == answer["predictions"][:3]
        for team in teams:
            assert outputs[f"predict_proba_{team}"]["data"] == pytest.approx(
                [p[team] for p in answer["probabilities"][:3]]
            )

        # ---- traffic from a shifted world, then the drift report on the logged answers
        shifted = send_traffic(
            url, tickets, TRAFFIC_DAY, rows=400, batch=50, drift="covariate_shift"
        )
        assert not shifted.errors and shifted.rows == 400
        log_store = LocalStore(
            env.data_dir / "lakefs-local", predictions_repository(tickets.dataset.repository)
        )

        def logged(n):
            def enough():
                try:
                    return len(current_window(log_store, tickets, "1", 5000)) >= n
                except Exception:  # the repository is created by the first commit
                    return False

            return enough

        wait_until("the shifted traffic in the committed log", logged(423), 60, proc, None)
        drifted = env.run([drift_report_key("tickets")])
        assert drifted.success
        report = _meta(env, drift_report_key("tickets"))
        assert report["window_rows"] == 423  # 20 + 3 + 400 answered rows
        assert report["drift_share"] >= 0.5, report["columns"]
        assert report["prediction_drifted"] is True, report["columns"]
        assert report["probabilities_drifted"] >= 2, report["columns"]
        for column in ("| prediction |", "| probability_billing |", "| probability_technical |"):
            assert column in report["columns"]
        assert not _check(drifted, "drift").passed

        # ---- live performance on delayed labels: the same world first, then a broken one
        labels_store = LocalStore(env.data_dir / "lakefs-local", labels_repository(tickets))
        stable = send_traffic(url, tickets, TRAFFIC_DAY, rows=600, batch=50, seed=5)
        assert not stable.errors
        assert commit_labels(labels_store, tickets, stable.labels)
        wait_until("the stable traffic in the log", logged(1023), 60, proc, None)
        within = env.run([production_performance_key("tickets")])
        live = _meta(env, production_performance_key("tickets"))
        assert live["labelled_rows"] == 600 and live["metric"] == "roc_auc_ovr"
        assert live["relative_change"] > -0.05, live  # the world the model learned

        broken = send_traffic(
            url, tickets, TRAFFIC_DAY, rows=600, batch=50, seed=6, drift="concept_drift"
        )
        assert commit_labels(labels_store, tickets, broken.labels)
        wait_until("the broken traffic in the log", logged(1623), 60, proc, None)
        result = env.run(
            [production_performance_key("tickets")],
            run_config={
                "ops": {"tickets__production_performance": {"config": {"window_rows": 600}}}
            },
        )
        check = _check(result, "performance")
        live = _meta(env, production_performance_key("tickets"))
        assert live["labelled_rows"] == 600
        assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR, check
        assert "worse than the ±3% band" in check.description
        assert live["live_roc_auc_ovr"] < live["evaluated_roc_auc_ovr"] * 0.9, live
        assert within.success

        # a labelling system that bypasses commit_labels delivers a class the model never
        # saw, for a row the server answered: the live score is not computed, and says why
        stray = orjson.dumps({"request_id": answer["request_id"], "row": 0, "label": "legal"})
        labels_store.put("main", "labels/tickets/20261210/labels-stray.jsonl", stray + b"\n")
        labels_store.commit("main", "labels: a stray class")
        whole = {"ops": {"tickets__production_performance": {"config": {"window_rows": 5000}}}}
        check = _check(
            env.run([production_performance_key("tickets")], run_config=whole), "performance"
        )
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN, check
        assert "label(s) ['legal'] for target 'team'" in check.description, check.description
        assert "not classes the model knows" in check.description

        # ---- a second version through the gate and a canary rollout, promoted: the rollout
        # watches the multiclass answers' confidence like a binary model's P(class 1)
        retrain = {
            "ops": {
                "tickets__trained_model": {"config": {"random_state": 3}},
                "tickets__deployment": {
                    "config": {"window_requests": 60, "max_prediction_shift": 3.0}
                },
            }
        }
        rollout = [trained_model_key("tickets"), model_evaluation_key("tickets")]
        assert env.run([*rollout, deployment_key("tickets")], retrain).success
        deployed = _meta(env, deployment_key("tickets"))
        assert deployed["decision"] == "promoted", deployed["reason"]
        assert deployed["strategy"] == "canary"
        assert (deployed["production_before"], deployed["production_now"]) == ("1", "2")
        assert deployed["candidate_requests"] > 0 and deployed["candidate_error_rate"] == 0.0
        assert 1 / 3 < deployed["candidate_mean_prediction"] <= 1.0, deployed
        answer = httpx.post(f"{url}/predict", json=body, timeout=30).json()
        assert answer["model_version"] == "2" and set(answer["predictions"]) <= teams

        # lineage: the first version is re-trained from its lakeFS commit, bit for bit
        from mlops_assets.training.reproduce import reproduce

        again = reproduce(env.tracking(), tickets, "1", env.store(tickets))
        assert again.matched, again.summary()
        assert again.max_abs_difference == 0.0
    finally:
        stop(proc)


def _wine_rows(env: Env, spec):
    """The wine data on main, as the dataset asset reads it."""
    from mlops_assets.quality import read_dataset

    store = env.store(spec)
    dataset, _, _ = read_dataset(store, spec.dataset, store.head("main"))
    return dataset
