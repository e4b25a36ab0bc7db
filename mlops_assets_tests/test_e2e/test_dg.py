"""`dg` beside `dagster`: `dg check defs`, `dg list defs` and one `dg launch` from the checkout
root, on a fresh DAGSTER_HOME, against the code location [tool.dg] in pyproject.toml names."""

import json
import os
import subprocess

import dagster as dg
import pytest

from mlops_assets.defs.keys import ASSET_NAMES, dataset_key, features_key
from mlops_assets.specs import load_specs
from mlops_assets.store.local import LocalStore
from mlops_assets_tests.processes import BIN, REPO, fresh_home

pytestmark = pytest.mark.e2e


@pytest.fixture
def home(tmp_path):
    return fresh_home(tmp_path)


def dg_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [BIN / "dg", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, (
        f"dg {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    return proc


def test_dg_check_defs(home):
    checked = dg_cli("check", "defs", env=home)
    assert "All definitions loaded successfully." in checked.stdout, checked.stdout + checked.stderr


def test_dg_list_defs_shows_every_spec(home):
    listed = json.loads(dg_cli("list", "defs", "--json", env=home).stdout)
    keys = {a["asset_key"] for a in listed["assets"]}
    checks = {c["key"] for c in listed["asset_checks"]}
    for spec in load_specs():
        expected = {f"{spec.name}/{name}" for name in ASSET_NAMES}
        assert expected <= keys, f"missing for '{spec.name}': {sorted(expected - keys)}"
        assert f"{spec.name}/model_evaluation:promotion_gate" in checks
    assert "churn/trained_model" in keys and "demand/drift_report" in keys
    assert "observe_sources" in {j["name"] for j in listed["jobs"]}


def test_dg_launch_materializes_at_the_head_of_main(home):
    # An explicit end date: the test never depends on the calendar.
    seed = [BIN / "mlops", "seed", "--days", "3", "--rows", "200", "--end", "2026-11-30"]
    seed += ["--spec", "churn"]
    seeded = subprocess.run(seed, cwd=REPO, env=home, capture_output=True, text=True, timeout=240)
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr

    launched = dg_cli("launch", "--assets", "churn/dataset,churn/features", env=home)
    log = launched.stdout + launched.stderr
    assert "RUN_SUCCESS" in log, log[-3000:]

    store = os.path.join(home["DAGSTER_HOME"], "mlops-data", "lakefs-local")
    head = LocalStore(store, "churn").head("main")
    with dg.DagsterInstance.from_config(home["DAGSTER_HOME"]) as instance:
        for key in (dataset_key("churn"), features_key("churn")):
            event = instance.get_latest_materialization_event(key)
            assert event is not None, f"{key.to_user_string()} was not materialized"
            assert event.asset_materialization.metadata["lakefs_commit"].value == head
        # Only what was selected ran: the model was not trained on the way.
        assert (
            instance.get_latest_materialization_event(dg.AssetKey(["churn", "trained_model"]))
            is None
        )
