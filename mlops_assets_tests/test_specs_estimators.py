"""Any scikit-learn-compatible estimator and per-column preprocessing, chosen in the spec:
checked when the specs load (errors name the spec file and field), trained for real, logged to
a real (embedded) MLflow store, loaded back with a trust list built from the reviewed spec,
and converted to ONNX where a converter exists, served by skops where none does."""

import datetime as dt
import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_assets.demo.simulator import simulate_batch
from mlops_assets.featurize import build_features
from mlops_assets.specs.model import SPECS_DIR, load_spec_file
from mlops_assets.training.pipeline import build_pipeline, spec_types
from mlops_assets.training.tracking import RegistryError, Tracking, load_skops, model_bytes
from mlops_assets.training.train import TrainingError, fit, inputs, split
from mlops_assets_tests.conftest import pin_mlflow_http_env

END = dt.date(2027, 3, 14)
CUSTOM = "mlops_assets_tests.byo_estimators.ShrunkLogistic"


def churn_spec(tmp_path, name: str = "churn", **sections):
    """The packaged churn spec with ``sections`` replaced, written to a file and loaded."""
    data = yaml.safe_load((SPECS_DIR / "churn.yaml").read_text())
    data.update(sections)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def load(tmp_path, **sections):
    return load_spec_file(churn_spec(tmp_path, **sections))


def features_for(spec, days: int = 3, rows: int = 200) -> pd.DataFrame:
    frames = [simulate_batch("churn", END - dt.timedelta(days=i), rows=rows) for i in range(days)]
    return build_features(pd.concat(frames, ignore_index=True), spec)


# ---- the spec ------------------------------------------------------------------------------


def test_an_estimator_by_import_path_with_params_builds_that_estimator(tmp_path):
    spec = load(
        tmp_path,
        model={
            "estimator": "sklearn.ensemble.ExtraTreesClassifier",
            "params": {"n_estimators": 25, "max_features": 0.5},
            "random_state": 7,
        },
    )
    est = build_pipeline(spec, spec.model).named_steps["model"]
    assert type(est).__name__ == "ExtraTreesClassifier"
    assert est.n_estimators == 25 and est.max_features == 0.5
    assert est.random_state == 7  # the spec's seed reaches it: the same spec, the same model


def test_a_built_in_name_keeps_working_and_takes_params_as_overrides(tmp_path):
    spec = load(
        tmp_path,
        model={"estimator": "random_forest", "n_estimators": 9, "params": {"bootstrap": False}},
    )
    est = build_pipeline(spec, spec.model).named_steps["model"]
    assert type(est).__name__ == "RandomForestClassifier"
    assert est.n_estimators == 9 and est.bootstrap is False


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"estimator": "sklearn.ensemble.ExtraTreesClassifer"},
            r"model.estimator: .*module 'sklearn.ensemble' has no 'ExtraTreesClassifer'",
        ),
        (
            {"estimator": "no_such_package.Model"},
            r"model.estimator: .*module 'no_such_package' cannot be imported",
        ),
        ({"estimator": "os.system"}, r"model.estimator: .*'os.system' is a builtin_function"),
        ({"estimator": "forest"}, r"model.estimator: .*neither a built-in estimator"),
        (
            {"estimator": "sklearn.svm.SVC", "params": {"kernal": "rbf"}},
            r"model.params: .*'kernal' not a parameter of sklearn.svm._classes.SVC; its "
            r"parameters are .*kernel",
        ),
        (
            {"estimator": "random_forest", "params": {"learning_rate": 0.1}},
            r"model.params of random_forest: 'learning_rate' not a parameter of "
            r"sklearn.ensemble._forest.RandomForestClassifier",
        ),
        (
            {"estimator": "sklearn.svm.SVC"},
            r"'sklearn.svm.SVC' with these params has no predict_proba.*probability: true",
        ),
        (
            {"estimator": "sklearn.ensemble.ExtraTreesRegressor"},
            r"is a regressor, but task is classification: name a classifier",
        ),
        (
            {"estimator": "mlops_assets_tests.byo_estimators.NeedsArguments"},
            r"cannot be built without arguments",
        ),
    ],
)
def test_an_unknown_estimator_or_parameter_names_the_spec_file_and_field(tmp_path, model, message):
    path = churn_spec(tmp_path, model=model)
    with pytest.raises(ValueError, match=rf"model spec {path}: .*{message}"):
        load_spec_file(path)


def test_per_column_preprocessing_is_chosen_in_the_spec(tmp_path):
    spec = load(
        tmp_path,
        preprocessing={
            "numeric": "passthrough",
            "categorical": "ordinal",
            "columns": {
                "monthly_charges": "sklearn.preprocessing.RobustScaler",
                "region": "onehot",
            },
        },
    )
    pre = build_pipeline(spec, spec.model).named_steps["preprocess"]
    groups = {name: (pipe, cols) for name, pipe, cols in pre.transformers}
    assert groups["numeric_passthrough"][1] == ["tenure_months", "support_tickets", "usage_hours"]
    assert [s for s, _ in groups["numeric_passthrough"][0].steps] == ["impute"]
    assert type(groups["numeric_robustscaler"][0].steps[-1][1]).__name__ == "RobustScaler"
    assert groups["categorical_ordinal"][1] == ["plan"]
    assert groups["categorical"][1] == ["region"]
    # and it trains and answers
    features = features_for(spec)
    trained = fit(features, spec, spec.model)
    assert 0.5 < trained.metrics["roc_auc"] <= 1.0


@pytest.mark.parametrize(
    ("pre", "message"),
    [
        ({"numeric": "onehot"}, r"preprocessing.numeric: 'onehot' does not apply to the numeric"),
        (
            {"columns": {"plan": "scale"}},
            r"preprocessing.columns.plan: 'scale' does not apply to the categorical feature",
        ),
        ({"columns": {"churned": "scale"}}, r"preprocessing.columns: 'churned' is not a feature"),
        (
            {"numeric": "sklearn.preprocessing.RobustScalar"},
            r"preprocessing.numeric 'sklearn.preprocessing.RobustScalar': module .* has no",
        ),
    ],
)
def test_a_wrong_preprocessing_choice_names_the_field(tmp_path, pre, message):
    path = churn_spec(tmp_path, preprocessing=pre)
    with pytest.raises(ValueError, match=rf"model spec {path}: .*{message}"):
        load_spec_file(path)


def test_an_estimator_that_fails_to_fit_names_the_estimator_and_what_to_check(tmp_path):
    # MultinomialNB refuses the negative values the default scaler produces
    spec = load(
        tmp_path,
        model={"estimator": "sklearn.naive_bayes.MultinomialNB"},
        threshold=0.5,
    )
    with pytest.raises(
        TrainingError,
        match=r"model 'churn': model.estimator 'sklearn.naive_bayes.MultinomialNB' .*failed to "
        r"fit .*ValueError: Negative values.*Check model.params and preprocessing",
    ):
        fit(features_for(spec), spec, spec.model)


# ---- the trust list ------------------------------------------------------------------------


def test_a_custom_estimator_loads_with_the_trust_list_of_its_spec_and_only_that(tmp_path):
    spec = load(tmp_path, model={"estimator": CUSTOM, "params": {"C": 0.3}}, threshold=0.5)
    features = features_for(spec)
    model = fit(features, spec, spec.model).pipeline
    blob, declared = model_bytes(model)
    assert CUSTOM in declared  # the file declares a type skops does not know
    path = tmp_path / "model.skops"
    path.write_bytes(blob)

    with pytest.raises(RegistryError, match=rf"{CUSTOM}.*refusing to load"):
        load_skops(path, "version 1 of 'churn'")  # without the spec: refused
    assert CUSTOM in spec_types(spec)
    loaded = load_skops(path, "version 1 of 'churn'", spec_types(spec))
    x = split(features, spec, "holdout")[0]
    assert np.array_equal(loaded.predict_proba(x), model.predict_proba(x))

    # A spec that reviewed another estimator does not trust this file.
    other = load(tmp_path / "..", name="other", model={"estimator": "linear"})
    with pytest.raises(RegistryError, match="refusing to load"):
        load_skops(path, "version 1 of 'other'", spec_types(other))


def _retarget(blob: bytes, old: tuple[str, str], new: tuple[str, str]) -> bytes:
    """The skops file with every node of class ``old`` renamed to ``new`` (module, class)."""
    src = zipfile.ZipFile(io.BytesIO(blob))
    schema = json.loads(src.read("schema.json"))

    def walk(node):
        if isinstance(node, dict):
            if (node.get("__module__"), node.get("__class__")) == old:
                node["__module__"], node["__class__"] = new
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for item in src.namelist():
            data = json.dumps(schema) if item == "schema.json" else src.read(item)
            dst.writestr(item, data)
    return out.getvalue()


@pytest.mark.parametrize(
    "target", [("builtins", "eval"), ("subprocess", "Popen"), ("numpy", "load")]
)
def test_a_tampered_artifact_of_a_custom_estimator_is_still_refused(tmp_path, target):
    spec = load(tmp_path, model={"estimator": CUSTOM}, threshold=0.5)
    model = fit(features_for(spec, days=2), spec, spec.model).pipeline
    blob, _ = model_bytes(model)
    module, name = CUSTOM.rsplit(".", 1)
    path = tmp_path / "tampered.skops"
    path.write_bytes(_retarget(blob, (module, name), target))
    with pytest.raises(RegistryError, match=rf"{target[0]}\.{target[1]}.*refusing to load"):
        load_skops(path, "version 2 of 'churn'", spec_types(spec))


# ---- ONNX: attempted, and a clean fallback -------------------------------------------------


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    pin_mlflow_http_env(monkeypatch)
    t = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "art"))
    t.configure()
    return t


@pytest.mark.parametrize(
    ("model", "converts"),
    [
        (
            {"estimator": "sklearn.ensemble.ExtraTreesClassifier", "params": {"n_estimators": 20}},
            True,
        ),
        ({"estimator": "sklearn.svm.SVC", "params": {"probability": True}}, None),
        (
            {
                "estimator": "sklearn.discriminant_analysis.QuadraticDiscriminantAnalysis",
                "params": {"reg_param": 0.1},
            },
            None,
        ),
        ({"estimator": CUSTOM}, False),
    ],
)
def test_onnx_is_attempted_and_a_model_without_a_converter_is_served_by_skops(
    tmp_path, tracking, model, converts
):
    import mlflow

    from mlops_assets.serving.compiled import load_for_serving, runtime_of
    from mlops_assets.training.evaluate import evaluate
    from mlops_assets.training.run import lineage_tags, train_and_log
    from mlops_assets.training.tracking import register

    spec = load(
        tmp_path, model=model, threshold=0.5, evaluation={"metric": "roc_auc", "floor": 0.5}
    )
    spec = spec.model_copy(update={"registered_model": f"churn-{tmp_path.name}"[:60]})
    features = features_for(spec)
    x, y = split(features, spec, "holdout")

    mlflow.set_experiment(experiment_id=tracking.ensure_experiment(spec))
    tags = lineage_tags(spec, spec.model, "test-commit", spec.dataset.repository)
    with mlflow.start_run() as run:
        logged = train_and_log(tracking, spec, features, spec.model, tags)
    version = register(
        tracking, spec.model_name, logged.model_uri, run.info.run_id, logged.tags
    ).version
    conversion = logged.tags["onnx.conversion"]
    if converts is not None:
        assert conversion == ("converted" if converts else "failed")
    if conversion == "failed":
        assert logged.tags["onnx.conversion_reason"]  # says why, never raised

    ev = evaluate(tracking, spec, version, x, y, spec.evaluation)  # the gate loads it: trusted
    assert ev.decision.promote, ev.decision
    predictor, runtime = load_for_serving(
        tracking, spec.model_name, version, trusted=spec_types(spec)
    )
    vtags = tracking.version(spec.model_name, version).tags
    if conversion == "failed":
        assert runtime == runtime_of(predictor) == "skops"
    else:
        assert runtime == ("onnxruntime" if vtags.get("onnx.parity") == "passed" else "skops")
    # whichever runtime answers, it answers like the trained model on the holdout
    expected = logged.trained.pipeline.predict_proba(inputs(x, spec))[:, 1]
    got = np.asarray(predictor.predict_proba(inputs(x, spec)))[:, 1]
    assert np.allclose(got, expected, atol=1e-6)


def test_run_config_picks_a_built_in_or_the_spec_s_estimator_never_a_new_import_path(tmp_path):
    from mlops_assets.specs.model import check_estimator_override

    spec = load(tmp_path, model={"estimator": "sklearn.ensemble.ExtraTreesClassifier"})
    for allowed in ("random_forest", "linear", "sklearn.ensemble.ExtraTreesClassifier"):
        check_estimator_override(spec, allowed)
    with pytest.raises(
        ValueError,
        match=r"field 'estimator': 'os.path.Evil' is neither the spec's estimator "
        r"\('sklearn.ensemble.ExtraTreesClassifier'\) nor a built-in.*reviewed spec file",
    ):
        check_estimator_override(spec, "os.path.Evil")
