"""Run hash and model digest: same inputs, same hash, same model."""

import subprocess
import sys

import pytest

from mlops_assets.featurize import build_features
from mlops_assets.quality import load_dataset
from mlops_assets.specs import Hyperparameters
from mlops_assets.specs.model import get_spec
from mlops_assets.store.local import LocalStore
from mlops_assets.training import lineage
from mlops_assets.training.run import code_version
from mlops_assets.training.tracking import model_bytes
from mlops_assets.training.train import TrainingError, fit
from mlops_assets_tests.conftest import seed_store
from mlops_assets_tests.processes import REPO

LIBS = {"scikit-learn": "1.9.1", "numpy": "2.4.6"}


def test_run_hash_is_stable_and_changes_with_every_input():
    base = lineage.run_hash("c1", "train-1", {"a": 1, "b": 2}, LIBS)
    assert base == lineage.run_hash("c1", "train-1", {"b": 2, "a": 1}, dict(LIBS))
    assert len(base) == 64
    variants = [
        lineage.run_hash("c2", "train-1", {"a": 1, "b": 2}, LIBS),
        lineage.run_hash("c1", "train-2", {"a": 1, "b": 2}, LIBS),
        lineage.run_hash("c1", "train-1", {"a": 1, "b": 3}, LIBS),
        lineage.run_hash("c1", "train-1", {"a": 1, "b": 2}, {**LIBS, "numpy": "2.5.0"}),
    ]
    assert len({base, *variants}) == 5


def test_code_version_ignores_the_gate_but_not_the_estimator():
    spec = get_spec("churn")
    stricter = spec.model_copy(
        update={"evaluation": spec.evaluation.model_copy(update={"floor": 0.9})}
    )
    deeper = spec.model_copy(update={"model": spec.model.model_copy(update={"max_depth": 3})})
    assert code_version(stricter) == code_version(spec)
    assert code_version(deeper) != code_version(spec)


def _features(store, spec, head):
    files = {p: store.get(head, p) for p in store.list(head, spec.dataset.prefix)}
    df, violations = load_dataset(files, spec.dataset)
    assert not violations
    return build_features(df, spec)


def test_same_inputs_give_the_same_model_digest_and_other_params_do_not(seeded, spec):
    store, head = seeded
    features = _features(store, spec, head)
    a = lineage.model_digest(model_bytes(fit(features, spec, spec.model).pipeline)[0])
    b = lineage.model_digest(model_bytes(fit(features, spec, spec.model).pipeline)[0])
    other = spec.model.model_copy(update={"random_state": spec.model.random_state + 1})
    c = lineage.model_digest(model_bytes(fit(features, spec, other).pipeline)[0])
    assert a == b
    assert a != c


DIGEST_IN_A_FRESH_PROCESS = """
import sys
from pathlib import Path
from mlops_assets.specs.model import get_spec
from mlops_assets.store.local import LocalStore
from mlops_assets_tests.test_training.test_lineage import _features
from mlops_assets.training import lineage
from mlops_assets.training.tracking import model_bytes
from mlops_assets.training.train import fit
spec = get_spec(sys.argv[1])
store = LocalStore(Path(sys.argv[2]), spec.dataset.repository)
f = _features(store, spec, sys.argv[3])
print(lineage.model_digest(model_bytes(fit(f, spec, spec.model).pipeline)[0]))
"""


def test_model_digest_is_the_same_in_another_process(seeded, spec, tmp_path):
    """skops names arrays by memory address: the digest must not depend on it."""
    store, head = seeded
    here = lineage.model_digest(
        model_bytes(fit(_features(store, spec, head), spec, spec.model).pipeline)[0]
    )
    out = subprocess.run(
        [sys.executable, "-c", DIGEST_IN_A_FRESH_PROCESS, spec.name, str(tmp_path / "store"), head],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == here


def test_single_class_target_is_a_clear_training_error(tmp_path):
    spec = get_spec("churn")
    store = LocalStore(tmp_path / "store", spec.dataset.repository)
    features = _features(store, spec, seed_store(store, spec))
    features[spec.target] = 1
    with pytest.raises(TrainingError, match="single class"):
        fit(features, spec, spec.model)


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_estimators", 0), ("max_depth", -1), ("learning_rate", 2.0), ("estimator", "svm")],
)
def test_hyperparameters_name_the_bad_field(field, value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as e:
        Hyperparameters.model_validate({field: value})
    assert e.value.errors()[0]["loc"] == (field,)
