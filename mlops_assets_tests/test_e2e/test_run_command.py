"""The README's run command brings up the UI with the data and feature assets in the lineage."""

import os

import pytest

from mlops_assets.specs import load_specs
from mlops_assets_tests.processes import REPO, free_port, graphql, start, stop, wait_until

pytestmark = pytest.mark.e2e

QUERY = "{ assetNodes { assetKey { path } groupName isObservable } }"


def test_run_script_serves_the_lineage(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "LAKEFS_"))}
    env.update(DAGSTER_HOME=str(tmp_path / "home"), DAGSTER_PORT=str(port))
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
        observable = {"/".join(n["assetKey"]["path"]) for n in found if n["isObservable"]}
        assert observable == {f"{s.name}/raw_data" for s in load_specs()}
        # The daemon is part of `dagster dev`.
        daemon = graphql(port, "{ instance { daemonHealth { allDaemonStatuses { daemonType } } } }")
        types = {
            d["daemonType"] for d in daemon["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
        }
        assert "SENSOR" in types
        assert "seeded" in log.read_text() or "already seeded" in log.read_text()
    finally:
        stop(proc)
