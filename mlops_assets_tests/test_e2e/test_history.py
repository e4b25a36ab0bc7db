"""The audit trail end to end: the first model, a promotion and a rollback made by the real
deployment asset (a real inference server, a real MLflow server), then a manual move by the
CLI; `mlops history` in a new process prints all four, with who, why and the evidence."""

import json

import dagster as dg
import pytest

from mlops_assets.defs.keys import (
    dataset_key,
    deployment_key,
    features_key,
    model_evaluation_key,
    trained_model_key,
)
from mlops_assets.serving.client import ServingClient
from mlops_assets_tests.processes import BIN, free_port, start, stop, wait_until
from mlops_assets_tests.test_e2e.test_cli_training import run
from mlops_assets_tests.test_serving.conftest import TOKEN, _ready, serve_env
from mlops_assets_tests.test_serving.test_deployment_asset import TRAIN_EVAL_DEPLOY, cfg, keys
from mlops_assets_tests.test_training.conftest import make_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def meta(env, key):
    mat = env.instance.get_latest_materialization_event(key).asset_materialization
    return {k: v.value for k, v in mat.metadata.items()}


def test_history_after_first_model_promote_rollback_and_a_manual_move(
    tmp_path, monkeypatch, mlflow_server
):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLOPS_SERVING_URL", url)
    monkeypatch.setenv("MLOPS_SERVING_TOKEN", TOKEN)
    env = make_env(tmp_path, monkeypatch, mlflow_server.url)
    registry = type("R", (), {})()
    registry.tracking_uri, registry.specs_dir = mlflow_server.url, env.specs_dir
    registry.data_dir = env.data_dir
    cli_env = serve_env(registry, MLOPS_COMMITTER="alice")
    with dg.instance_for_test() as instance:
        env.instance = instance
        spec = env.spec("churn")
        env.seed(spec)
        first = [dataset_key("churn"), features_key("churn"), trained_model_key("churn")]
        assert env.run([*first, model_evaluation_key("churn")]).success
        v1 = str(meta(env, trained_model_key("churn"))["model_version"])

        log = tmp_path / "serve.log"
        cmd = [str(BIN / "mlops"), "serve", "--port", str(port), "--poll-seconds", "0.5"]
        proc = start(cmd, serve_env(registry), log)
        try:
            wait_until("churn model", lambda: _ready(f"{url}/v2/models/churn"), 120, proc, log)
            assert ServingClient(url, TOKEN).deployment("churn")["production"] == v1

            promote = env.run(keys(TRAIN_EVAL_DEPLOY), cfg(3))
            assert promote.success
            v2 = str(meta(env, trained_model_key("churn"))["model_version"])
            m = meta(env, deployment_key("churn"))
            assert m["decision"] == "promoted", m["reason"]

            rollback = env.run(keys(TRAIN_EVAL_DEPLOY), cfg(11, max_p95_ms=0.01))
            v3 = str(meta(env, trained_model_key("churn"))["model_version"])
            m = meta(env, deployment_key("churn"))
            assert m["decision"] == "rolled_back", m["reason"]
        finally:
            stop(proc)  # the trail outlives the server, the Dagster process and this instance

        # the deployment's metadata points at the trail and shows its latest entries
        assert m["audit_entries"] == 3 and m["audit_command"] == "mlops history churn"
        assert "-audit" in m["audit_location"] and "| rollback |" in m["audit_trail"]

    # a new process reads it back (nothing in memory survives), and a person moves production
    out = run([BIN / "mlops", "history", "churn", "--json"], cli_env).stdout
    entries = json.loads(out)
    assert [(e["action"], e["from_version"], e["to_version"]) for e in entries] == [
        ("first_model", None, v1),
        ("promote", v1, v2),
        ("rollback", v3, v2),
    ]
    assert entries[1]["run_id"] == promote.run_id and entries[2]["run_id"] == rollback.run_id
    assert {e["trigger"] for e in entries} == {"manual launch"}
    gate = entries[1]["evidence"]["gate"]
    assert gate["decision"] == "passed" and gate["champion_version"] == v1
    assert gate["floor_source"] == "spec" and gate["metric"] == "roc_auc" and "bar" in gate
    assert entries[1]["evidence"]["canary"]["requests"] >= 1
    assert "p95 latency" in entries[2]["reason"]
    assert entries[2]["evidence"]["canary"]["requests"] >= 1

    moved = run(
        [BIN / "mlops", "history", "churn", "--set-production", v1, "--reason", "incident 42"],
        cli_env,
    ).stdout
    assert f"production moved {v2} -> {v1}" in moved
    assert f"manual      production v{v2} -> v{v1}  [cli; no run by alice]  incident 42" in moved
    assert f"production now: v{v1}" in moved
    assert "first_model production none -> v" + v1 in moved
    assert "evidence: " in moved and "canary=" in moved

    from mlops_assets.training.tracking import PRODUCTION

    alias = env.client().get_model_version_by_alias(spec.model_name, PRODUCTION)
    assert str(alias.version) == v1
    # and a move made outside the platform (the MLflow API) is called out, not hidden
    env.client().set_registered_model_alias(spec.model_name, PRODUCTION, v3)
    warned = run([BIN / "mlops", "history", "churn"], cli_env)
    assert f"production is v{v3}, but the last recorded move left it at v{v1}" in warned.stderr
