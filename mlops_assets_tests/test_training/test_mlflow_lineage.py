"""MLflow 3 lineage of trained_model, read back from a real MLflow server: holdout metrics on
the LoggedModel, the lakeFS commit as the run's dataset inputs, the model card with each
version, stated pip requirements and a registration that does not wait."""

import json
from importlib import metadata
from types import SimpleNamespace

import pytest

from mlops_assets.defs.keys import (
    dataset_key,
    features_key,
    model_evaluation_key,
    trained_model_key,
)
from mlops_assets.training import lineage
from mlops_assets.training.run import MODEL_CARD
from mlops_assets.training.tracking import (
    RegistryError,
    append_to_model_file,
    model_id_of,
    read_model_file,
)


@pytest.fixture
def trained(server_env):
    """churn trained once through Dagster; the registered version and its run."""
    env = server_env
    spec = env.spec("churn")
    head = env.seed(spec)
    result = env.run([dataset_key("churn"), features_key("churn"), trained_model_key("churn")])
    assert result.success
    mat = env.instance.get_latest_materialization_event(trained_model_key("churn"))
    meta = {k: v.value for k, v in mat.asset_materialization.metadata.items()}
    client = env.client()
    mv = client.get_model_version(spec.model_name, str(meta["model_version"]))
    return SimpleNamespace(
        env=env, spec=spec, head=head, meta=meta, mv=mv, run=client.get_run(mv.run_id)
    )


def test_holdout_metrics_are_on_the_logged_model_with_their_dataset(trained):
    env, spec, head, meta = trained.env, trained.spec, trained.head, trained.meta
    mv, run = trained.mv, trained.run
    assert model_id_of(mv) == meta["mlflow_model_id"]
    model = env.client().get_logged_model(meta["mlflow_model_id"])
    on_model = {m.key: m for m in model.metrics}
    assert set(on_model) == {f"holdout_{k}" for k in spec.metrics}
    for k in spec.metrics:
        assert on_model[f"holdout_{k}"].value == pytest.approx(meta[k])
        assert on_model[f"holdout_{k}"].dataset_name == f"churn-holdout@{head[:12]}"
        assert run.data.metrics[f"holdout_{k}"] == pytest.approx(meta[k])  # and on the run


def test_the_run_inputs_are_the_lakefs_commit_with_rows_and_schema(trained):
    import mlflow

    spec, head, meta, run = trained.spec, trained.head, trained.meta, trained.run
    uri = f"lakefs://{spec.dataset.repository}/{head}/{spec.dataset.prefix}"
    assert meta["training_data"] == uri
    inputs = {
        {t.key: t.value for t in d.tags}["mlflow.data.context"]: d
        for d in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"training", "evaluation"}
    for context, rows in (("training", meta["train_rows"]), ("evaluation", meta["holdout_rows"])):
        dataset = inputs[context].dataset
        assert dataset.source_type == "lakefs"
        assert json.loads(dataset.source) == {"uri": uri}
        assert mlflow.data.get_source(inputs[context]).uri == uri  # read back by MLflow
        assert json.loads(dataset.profile)["num_rows"] == rows
        schema = {c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]}
        assert schema == {*spec.features, spec.target}


def test_every_version_carries_its_model_card(trained):
    env, spec, head, meta, mv = trained.env, trained.spec, trained.head, trained.meta, trained.mv
    card = read_model_file(env.tracking(), spec.model_name, mv.version, MODEL_CARD)
    assert card.startswith(f"# Model card: {spec.model_name}")
    assert spec.description in card and "Intended use:" in card
    assert f"| commit | `{head}` |" in card
    assert f"| train rows | {meta['train_rows']} |" in card
    for feature in spec.features:
        assert f"| `{feature}` |" in card
    assert f"| roc_auc | {meta['roc_auc']:.6g} |" in card
    assert "## Drift reference" in card
    assert f"| scikit-learn | {metadata.version('scikit-learn')} |" in card
    assert f"| run hash | `{meta['run_hash']}` |" in card
    assert f"Decision threshold: {meta['decision_threshold']:g}" in card
    gate = spec.evaluation
    assert f"{gate.metric} >= {gate.floor:g}, and no more than {gate.tolerance:.0%} worse" in card


def test_the_gate_decision_is_appended_to_the_card_at_evaluation(trained):
    env, spec, mv = trained.env, trained.spec, trained.mv
    assert env.run([model_evaluation_key("churn")]).success
    mat = env.instance.get_latest_materialization_event(model_evaluation_key("churn"))
    evaluation = {k: v.value for k, v in mat.asset_materialization.metadata.items()}
    card = read_model_file(env.tracking(), spec.model_name, mv.version, MODEL_CARD)
    assert card.startswith(f"# Model card: {spec.model_name}")  # kept, not replaced
    assert "## Promotion gate: decision" in card
    assert f"**{evaluation['decision']}**: {evaluation['reason']}" in card
    assert f"| challenger {spec.evaluation.metric} |" in card


def test_the_gate_decision_can_be_appended_to_the_card(trained):
    env, spec, mv = trained.env, trained.spec, trained.mv
    tracking = env.tracking()
    section = lineage.gate_section("passed", "first model: roc_auc 0.81 clears the floor 0.7")
    append_to_model_file(tracking, spec.model_name, mv.version, MODEL_CARD, section)
    card = read_model_file(tracking, spec.model_name, mv.version, MODEL_CARD)
    assert card.startswith(f"# Model card: {spec.model_name}")  # kept, not replaced
    assert card.rstrip().endswith("**passed**: first model: roc_auc 0.81 clears the floor 0.7")
    with pytest.raises(RegistryError, match="has no version '999'"):
        append_to_model_file(tracking, spec.model_name, "999", MODEL_CARD, section)


def test_requirements_are_stated_and_registration_is_ready_at_once(trained):
    env, spec, mv = trained.env, trained.spec, trained.mv
    requirements = read_model_file(env.tracking(), spec.model_name, mv.version, "requirements.txt")
    assert requirements.split() == lineage.pip_requirements()
    assert "pytest" not in requirements  # what MLflow's inference picked up from this process
    assert mv.status == "READY"
