"""MLflow artifacts on S3, end to end: a real ``mlflow server`` proxying its artifacts to a
real S3 endpoint (``moto_server``), with Dagster training, registering and gating a model."""

import dagster as dg
import pytest

from mlops_assets.defs.keys import (
    dataset_key,
    features_key,
    model_evaluation_key,
    trained_model_key,
)
from mlops_assets.featurize import build_features
from mlops_assets.quality import load_dataset
from mlops_assets.training.tracking import PRODUCTION, Tracking
from mlops_assets.training.train import score, split
from mlops_assets_tests.servers import mlflow_server, moto_s3
from mlops_assets_tests.test_training.conftest import make_env

BUCKET = "mlops-artifacts"
PREFIX = "mlflow"
REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def bucket_keys(s3) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def metadata(instance, key) -> dict:
    mat = instance.get_latest_materialization_event(key).asset_materialization
    return {k: v.value for k, v in mat.metadata.items()}


def holdout(env, spec, commit: str):
    store = env.store(spec)
    paths = store.list(commit, spec.dataset.prefix)
    dataset, violations = load_dataset({p: store.get(commit, p) for p in paths}, spec.dataset)
    assert not violations
    return split(build_features(dataset, spec), spec, "holdout")


def test_trained_model_is_stored_on_s3_registered_loaded_back_and_promoted(tmp_path, monkeypatch):
    with moto_s3(tmp_path / "moto") as moto:
        s3 = s3_client(moto.url)
        s3.create_bucket(Bucket=BUCKET)
        assert bucket_keys(s3) == []
        server_root = tmp_path / "mlflow"
        server_vars = {"MLFLOW_S3_ENDPOINT_URL": moto.url, "AWS_DEFAULT_REGION": REGION}
        with mlflow_server(
            server_root,
            artifacts_destination=f"s3://{BUCKET}/{PREFIX}",
            env={**server_vars, **CREDENTIALS},
        ) as server:
            env = make_env(tmp_path, monkeypatch, server.url)
            with dg.instance_for_test() as instance:
                env.instance = instance
                spec = env.spec("churn")
                head = env.seed(spec)
                result = env.run(
                    [
                        dataset_key("churn"),
                        features_key("churn"),
                        trained_model_key("churn"),
                        model_evaluation_key("churn"),
                    ]
                )
                assert result.success
                trained = metadata(instance, trained_model_key("churn"))
                evaluation = metadata(instance, model_evaluation_key("churn"))
            version = str(trained["model_version"])
            assert trained["lakefs_commit"] == head
            assert evaluation["decision"] == "passed"

            # The model's files are in the bucket, under the server's artifacts destination...
            keys = bucket_keys(s3)
            skops = [k for k in keys if k.endswith(".skops")]
            mlmodel = [k for k in keys if k.rsplit("/", 1)[-1] == "MLmodel"]
            assert skops and mlmodel, keys
            assert all(k.startswith(f"{PREFIX}/") for k in keys), keys
            assert {k.rsplit("/", 1)[0] for k in skops} <= {k.rsplit("/", 1)[0] for k in mlmodel}
            # ... and not on the server's disk.
            assert not (server_root / "artifacts").exists()

            # The registered version comes back from S3 (through the server) and predicts
            # exactly as it scored when the gate judged it.
            tracking = Tracking(server.url)
            tracking.configure()
            pipeline = tracking.load_model(spec.model_name, version)
            x, y = holdout(env, spec, head)
            assert len(pipeline.predict(x)) == len(x) > 0
            metric = spec.evaluation.metric
            assert score(pipeline, x, y, spec)[metric] == pytest.approx(
                evaluation[f"challenger_{metric}"]
            )

            client = env.client()
            assert client.get_model_version_by_alias(spec.model_name, PRODUCTION).version == version
