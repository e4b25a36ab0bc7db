"""Reproducing a registered version from its lineage; the embedded store; alias switches."""

import json
from pathlib import Path

from mlops_assets.defs.keys import (
    dataset_key,
    features_key,
    model_evaluation_key,
    trained_model_key,
)
from mlops_assets.training.reproduce import reproduce
from mlops_assets.training.tracking import PREVIOUS, PRODUCTION, tracking_from_env


def all_keys(name):
    return [
        dataset_key(name),
        features_key(name),
        trained_model_key(name),
        model_evaluation_key(name),
    ]


def version_of(env, name) -> str:
    mat = env.instance.get_latest_materialization_event(trained_model_key(name))
    return str(mat.asset_materialization.metadata["model_version"].value)


def test_reproducing_a_registered_version_matches(server_env, spec):
    env = server_env
    spec = env.spec(spec.name)
    env.seed(spec)
    assert env.run(all_keys(spec.name)).success
    version = version_of(env, spec.name)

    result = reproduce(env.tracking(), spec, version, env.store(spec))
    assert result.matched, result.summary()
    assert result.predictions_equal and result.max_abs_difference == 0.0
    assert result.run_hash_now == result.run_hash_recorded
    assert result.differences == []
    assert result.summary().startswith("MATCH")
    tags = env.client().get_model_version(spec.model_name, version).tags
    assert tags["mlops.reproduced"] == "match"


def test_tampered_lineage_is_reported_as_a_mismatch(server_env):
    env = server_env
    spec = env.spec("churn")
    env.seed(spec)
    assert env.run(all_keys("churn")).success
    version = version_of(env, "churn")
    client = env.client()
    params = json.loads(client.get_model_version(spec.model_name, version).tags["mlops.params"])
    params["n_estimators"] += 5  # the recorded lineage no longer describes the artifact
    client.set_model_version_tag(spec.model_name, version, "mlops.params", json.dumps(params))

    result = reproduce(env.tracking(), spec, version, env.store(spec))
    assert not result.matched
    assert result.digest_now != result.digest_recorded
    assert result.run_hash_now != result.run_hash_recorded
    assert result.summary().startswith("MISMATCH")
    assert client.get_model_version(spec.model_name, version).tags["mlops.reproduced"] == "mismatch"


def test_embedded_default_needs_no_server(embedded_env):
    env = embedded_env
    spec = env.spec("demand")
    env.seed(spec)
    assert env.run(all_keys("demand")).success
    assert env.tracking_uri.startswith("sqlite:///")
    db = Path(env.tracking_uri.removeprefix("sqlite:///"))
    assert db.is_file() and db.parent == env.data_dir / "mlflow"
    skops = list((env.data_dir / "mlflow" / "artifacts" / "demand").rglob("*.skops"))
    assert len(skops) == 1
    meta = env.instance.get_latest_materialization_event(
        trained_model_key("demand")
    ).asset_materialization.metadata
    assert meta["tracking_uri"].value == env.tracking_uri
    assert meta["model_version_url"].value.startswith("http://127.0.0.1:5000/#/models/")

    tracking = tracking_from_env()  # what `mlops reproduce` uses: the same embedded store
    tracking.configure()
    assert tracking.tracking_uri == env.tracking_uri
    version = version_of(env, "demand")
    assert tracking.version_by_alias(spec.model_name, PRODUCTION).version == version
    assert reproduce(tracking, spec, version, env.store(spec)).matched

    # evaluating the champion against itself passes and moves nothing
    again = env.run([model_evaluation_key("demand")])
    meta = env.instance.get_latest_materialization_event(
        model_evaluation_key("demand")
    ).asset_materialization.metadata
    assert again.success
    assert meta["champion_version"].value == version
    assert meta["aliases_moved"].value == "challenger"
    assert tracking.version_by_alias(spec.model_name, PRODUCTION).version == version


def test_promote_moves_production_in_one_step_and_remembers_the_previous(server_env):
    env = server_env
    spec = env.spec("churn")
    env.seed(spec)
    assert env.run(all_keys("churn")).success
    first = version_of(env, "churn")
    cfg = {"ops": {"churn__trained_model": {"config": {"random_state": 3}}}}
    assert env.run([trained_model_key("churn")], cfg).success
    second = version_of(env, "churn")
    tracking = env.tracking()

    assert tracking.promote(spec.model_name, second) == first
    assert tracking.version_by_alias(spec.model_name, PRODUCTION).version == second
    assert tracking.version_by_alias(spec.model_name, PREVIOUS).version == first
    # promoting the champion again changes nothing
    assert tracking.promote(spec.model_name, second) is None
    assert tracking.version_by_alias(spec.model_name, PREVIOUS).version == first
