"""The README's run command brings up the UI with the data and feature assets in the lineage."""

import os

import dagster as dg
import httpx
import pytest

from mlops_assets.defs.keys import trained_model_key
from mlops_assets.specs import load_specs
from mlops_assets_tests.processes import REPO, free_port, graphql, start, stop, wait_until
from mlops_assets_tests.test_serving.conftest import _ready

pytestmark = pytest.mark.e2e

QUERY = "{ assetNodes { assetKey { path } groupName isObservable } }"


def test_run_script_serves_the_lineage(tmp_path):
    port = free_port()
    ours = ("MLOPS_", "LAKEFS_", "MLFLOW_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    serving = free_port()
    env.update(
        DAGSTER_HOME=str(tmp_path / "home"),
        DAGSTER_PORT=str(port),
        MLOPS_SERVING_PORT=str(serving),
        MLOPS_DEMO_END="2026-11-30",  # the demo data's last day: never the calendar's
    )
    log = tmp_path / "run.log"
    proc = start([str(REPO / "scripts" / "run.sh")], env, log)
    try:

        def nodes():
            data = graphql(port, QUERY).get("data") or {}
            return data.get("assetNodes")

        found = wait_until("dagster dev UI", nodes, timeout=240, proc=proc, log=log)
        groups = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in found}
        for spec in load_specs():
            assert groups[f"{spec.name}/raw_data"] == "data"
            assert groups[f"{spec.name}/dataset"] == "data"
            assert groups[f"{spec.name}/features"] == "features"
            assert groups[f"{spec.name}/trained_model"] == "training"
            assert groups[f"{spec.name}/model_evaluation"] == "training"
            assert groups[f"{spec.name}/deployment"] == "deployment"
            assert groups[f"{spec.name}/drift_report"] == "monitoring"
        observable = {"/".join(n["assetKey"]["path"]) for n in found if n["isObservable"]}
        assert observable == {f"{s.name}/raw_data" for s in load_specs()}
        # The daemon is part of `dagster dev`.
        daemon = graphql(port, "{ instance { daemonHealth { allDaemonStatuses { daemonType } } } }")
        types = {
            d["daemonType"] for d in daemon["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
        }
        assert "SENSOR" in types
        assert "seeded" in log.read_text() or "already seeded" in log.read_text()
        # The first start trained and gated the demo models; the server serves the champions.
        url = f"http://127.0.0.1:{serving}"
        wait_until("inference server", lambda: _ready(url), timeout=120, proc=proc, log=log)
        row = {
            "temperature_c": 21.0,
            "price": 4.5,
            "promotion": 1,
            "day_of_week": 5,
            "store_type": "mall",
        }
        answer = httpx.post(f"{url}/predict", json={"model": "demand", "records": [row]}).json()
        assert answer["model_version"] == "1" and isinstance(answer["predictions"][0], float)
        # run.sh says which version of each model serves, and churn's first model is worth it:
        # it ranks churners well and labels them at the threshold chosen for F1
        text = log.read_text()
        for spec in load_specs():
            assert f"[{spec.name}] production: version 1 (" in text, text[-3000:]
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            event = instance.get_latest_materialization_event(trained_model_key("churn"))
            meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        assert meta["roc_auc"] >= 0.80 and meta["f1"] > 0.5, meta
        assert f"decision threshold {meta['decision_threshold']:g}" in text
    finally:
        stop(proc)
