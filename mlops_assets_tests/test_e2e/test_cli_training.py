"""The training group from the command line on a fresh DAGSTER_HOME, against a real MLflow
server: register, refuse a worse model at the gate, reproduce."""

import json
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.defs.keys import model_evaluation_key, trained_model_key
from mlops_assets.specs.model import get_spec
from mlops_assets.store.local import LocalStore
from mlops_assets_tests.processes import BIN, REPO, fresh_home
from mlops_assets_tests.test_training.conftest import unique_specs

pytestmark = pytest.mark.e2e


def run(cmd, env, expect=0, timeout=400):
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == expect, (
        f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    return proc


def materialize(env, selection, config=None, expect=0):
    cmd = [BIN / "dagster", "asset", "materialize", "-m", "mlops_assets.definitions"]
    cmd += ["--select", selection]
    if config:
        cmd += ["--config-json", json.dumps(config)]
    return run(cmd, env, expect)


def latest_meta(home, key):
    with dg.DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(key)
        assert event is not None, key
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_training_group_registers_refuses_a_worse_model_and_reproduces(tmp_path, mlflow_server):
    from mlflow import MlflowClient

    specs_dir = unique_specs(tmp_path)
    env = fresh_home(tmp_path, MLFLOW_TRACKING_URI=mlflow_server.url, MLOPS_SPECS_DIR=specs_dir)
    home = Path(env["DAGSTER_HOME"])
    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)

    # 1. Fresh home: the demo data (its last day pinned: never the calendar's), then the
    # training group and everything upstream; both models.
    run([BIN / "mlops", "seed", "--end", "2026-11-30"], env)
    materialize(env, '+group:"training"')
    churn = get_spec("churn", specs_dir)
    for name in ("churn", "demand"):
        spec = get_spec(name, specs_dir)
        meta = latest_meta(home, trained_model_key(name))
        head = LocalStore(home / "mlops-data" / "lakefs-local", spec.dataset.repository)
        mv = client.get_model_version(spec.model_name, str(meta["model_version"]))
        assert mv.tags["lakefs.commit"] == head.head("main") == meta["lakefs_commit"]
        assert mv.tags["mlops.run_hash"] == meta["run_hash"]
        assert mv.tags["dagster.asset_key"] == f"{name}/trained_model"
        assert client.get_run(mv.run_id).info.status == "FINISHED"
        assert client.get_model_version_by_alias(spec.model_name, "production").version == (
            mv.version
        )
    first = str(latest_meta(home, trained_model_key("churn"))["model_version"])

    # 2. A worse model: refused by the gate, the reason on the evaluation, production kept.
    worse = {"ops": {"churn__trained_model": {"config": {"n_estimators": 1, "max_depth": 1}}}}
    refused = materialize(env, 'group:"training" and key:"churn/*"', worse, expect=1)
    assert "promotion_gate" in refused.stdout + refused.stderr
    meta = latest_meta(home, model_evaluation_key("churn"))
    assert meta["decision"] == "refused"
    assert "refused" in meta["reason"] and "roc_auc" in meta["reason"]
    assert client.get_model_version_by_alias(churn.model_name, "production").version == first
    with dg.DagsterInstance.from_config(str(home)) as instance:
        check_key = dg.AssetCheckKey(model_evaluation_key("churn"), "promotion_gate")
        (record,) = instance.event_log_storage.get_asset_check_execution_history(check_key, 1)
        evaluation = record.event.dagster_event.event_specific_data
        assert evaluation.passed is False
        assert evaluation.description == meta["reason"]

    # 3. Reproduce the champion from its recorded lineage; `mlops models` shows the story.
    reproduced = run([BIN / "mlops", "reproduce", "churn", first], env)
    assert reproduced.stdout.startswith("MATCH"), reproduced.stdout
    models = run([BIN / "mlops", "models", "churn"], env).stdout
    assert f"v{first}" in models and "production" in models
    assert "gate=refused" in models and "reproduced=match" in models
