"""The deployment asset through Dagster against a real inference server and MLflow server:
a passing challenger is canaried (through the registry's shared desired state, which the
server reconciles to) and promoted; a bad one is rolled back by itself."""

import dagster as dg

from mlops_assets.defs.keys import (
    dataset_key,
    deployment_key,
    features_key,
    model_evaluation_key,
    trained_model_key,
)
from mlops_assets.serving.client import ServingClient
from mlops_assets_tests.processes import BIN, free_port, start, stop, wait_until
from mlops_assets_tests.test_serving.conftest import TOKEN, _ready, serve_env
from mlops_assets_tests.test_training.conftest import make_env

TRAIN_EVAL_DEPLOY = ["trained_model", "model_evaluation", "deployment"]


def keys(names):
    return [dg.AssetKey(["churn", n]) for n in names]


def cfg(random_state, **deploy):
    return {
        "ops": {
            "churn__trained_model": {"config": {"random_state": random_state}},
            # the mean prediction of two forests over a few dozen random rows each differs by
            # chance by up to ~50 %: not what this test judges
            "churn__deployment": {
                "config": {"window_requests": 60, "max_prediction_shift": 3.0, **deploy}
            },
        }
    }


def meta(env, key):
    mat = env.instance.get_latest_materialization_event(key).asset_materialization
    return {k: v.value for k, v in mat.metadata.items()}


def test_canary_then_promote_and_a_bad_one_rolled_back(tmp_path, monkeypatch, mlflow_server):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLOPS_SERVING_URL", url)
    monkeypatch.setenv("MLOPS_SERVING_TOKEN", TOKEN)
    env = make_env(tmp_path, monkeypatch, mlflow_server.url)
    with dg.instance_for_test() as instance:
        env.instance = instance
        spec = env.spec("churn")
        env.seed(spec)
        first = [dataset_key("churn"), features_key("churn"), trained_model_key("churn")]
        assert env.run([*first, model_evaluation_key("churn")]).success
        champion = str(meta(env, trained_model_key("churn"))["model_version"])

        registry = type("R", (), {})()
        registry.tracking_uri, registry.specs_dir = mlflow_server.url, env.specs_dir
        registry.data_dir = env.data_dir
        log = tmp_path / "serve.log"
        cmd = [str(BIN / "mlops"), "serve", "--port", str(port), "--poll-seconds", "0.5"]
        proc = start(cmd, serve_env(registry), log)
        try:
            wait_until("churn model", lambda: _ready(f"{url}/v2/models/churn"), 120, proc, log)
            client = ServingClient(url, TOKEN)
            assert client.deployment("churn")["production"] == champion

            # a passing challenger: canary at 20 %, watched, promoted
            result = env.run(keys(TRAIN_EVAL_DEPLOY), cfg(3))
            assert result.success
            m = meta(env, deployment_key("churn"))
            challenger = str(meta(env, trained_model_key("churn"))["model_version"])
            assert m["decision"] == "promoted", m["reason"]
            assert m["strategy"] == "canary"
            assert (m["production_before"], m["production_now"]) == (champion, challenger)
            assert m["candidate_requests"] >= 60 and m["candidate_error_rate"] == 0.0
            assert m["server_url"] == url
            assert m["analysis"] == f"1 replica entries ({url})"
            assert m["replicas_not_in_sync"] == 0
            assert "mlops.rollout" not in env.client().get_registered_model(spec.model_name).tags
            assert client.deployment("churn")["production"] == challenger
            mv = env.client().get_model_version_by_alias(spec.model_name, "production")
            assert str(mv.version) == challenger
            assert (
                env.client()
                .get_model_version_by_alias(spec.model_name, "previous_production")
                .version
                == champion
            )

            # a challenger that passes the gate but misses the serving bound: rolled back.
            # (A 10 microsecond p95 no real request meets: deterministic. A prediction-shift
            # bound is not: two forests of one data set predict the same mean probability,
            # the base rate, to four digits.)
            result = env.run(keys(TRAIN_EVAL_DEPLOY), cfg(11, max_p95_ms=0.01))
            m = meta(env, deployment_key("churn"))
            bad = str(meta(env, trained_model_key("churn"))["model_version"])
            assert m["decision"] == "rolled_back"
            assert "p95 latency" in m["reason"]
            assert m["production_now"] == challenger
            (check,) = [
                c for c in result.get_asset_check_evaluations() if c.check_name == "rollout_healthy"
            ]
            assert not check.passed and "p95 latency" in check.description
            assert client.deployment("churn") == {
                "production": challenger,
                "candidate": None,
                "weight": 0.0,
                "mode": "single",
            }
            mv = env.client().get_model_version_by_alias(spec.model_name, "production")
            assert str(mv.version) == challenger
            tags = env.client().get_model_version(spec.model_name, bad).tags
            assert tags["deploy.decision"] == "rolled_back"
        finally:
            stop(proc)
