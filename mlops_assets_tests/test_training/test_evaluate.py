"""The evaluation and gate as plain library code, on the embedded MLflow store (SQLite, no
server): the first good version takes both aliases, a worse one is refused and moves none,
and every decision is tagged on its version."""

import datetime as dt

import pandas as pd
import pytest

from mlops_assets.demo.simulator import simulate_batch
from mlops_assets.featurize import build_features
from mlops_assets.specs.model import get_spec
from mlops_assets.training.evaluate import evaluate
from mlops_assets.training.run import lineage_tags, train_and_log
from mlops_assets.training.tracking import CHALLENGER, PRODUCTION, Tracking, register
from mlops_assets.training.train import split
from mlops_assets_tests.conftest import pin_mlflow_http_env

END = dt.date(2027, 3, 14)


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    pin_mlflow_http_env(monkeypatch)  # configure() sets them process-wide
    t = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "art"))
    t.configure()
    return t


def _register(tracking, spec, features, params) -> str:
    import mlflow

    mlflow.set_experiment(experiment_id=tracking.ensure_experiment(spec))
    tags = lineage_tags(spec, params, "test-commit", spec.dataset.repository)
    with mlflow.start_run() as run:
        logged = train_and_log(tracking, spec, features, params, tags)
    return register(tracking, spec.model_name, logged.model_uri, run.info.run_id, tags).version


def test_the_gate_promotes_the_first_good_version_and_refuses_a_worse_one(tracking):
    spec = get_spec("churn")
    frames = [simulate_batch("churn", END - dt.timedelta(days=i), rows=250) for i in range(6)]
    features = build_features(pd.concat(frames, ignore_index=True), spec)
    x, y = split(features, spec, "holdout")
    good = _register(tracking, spec, features, spec.model)
    worse = spec.model.model_copy(update={"n_estimators": 1, "max_depth": 1})
    bad = _register(tracking, spec, features, worse)

    first = evaluate(tracking, spec, good, x, y, spec.evaluation)
    assert first.decision.promote and first.champion_version is None
    assert first.aliases_moved == [CHALLENGER, PRODUCTION]
    assert first.challenger_scores["roc_auc"] >= 0.8

    second = evaluate(tracking, spec, bad, x, y, spec.evaluation)
    assert not second.decision.promote and second.aliases_moved == []
    assert second.champion_version == good
    assert second.champion_scores == first.challenger_scores  # the same holdout, same model
    assert "refused" in second.decision.reason and "| roc_auc |" in second.table()
    assert tracking.version_by_alias(spec.model_name, PRODUCTION).version == good
    tags = tracking.version(spec.model_name, bad).tags
    assert tags["gate.decision"] == "refused" and tags["gate.champion_version"] == good
    assert tags["gate.reason"] == second.decision.reason
