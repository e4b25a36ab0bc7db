"""Compiled inference on the embedded MLflow store (SQLite, no server), real scikit-learn,
skl2onnx and ONNX Runtime: training logs the ONNX graph beside the skops model, the gate checks
parity on the whole holdout and records it on the version, and the serving loader picks ONNX
Runtime only where parity passed. Pipelines that do not convert, or whose graph disagrees,
are recorded with the reason and served by skops."""

import datetime as dt
import json
import urllib.request

import numpy as np
import pandas as pd
import pytest

from mlops_assets.demo.simulator import simulate_batch
from mlops_assets.featurize import build_features
from mlops_assets.serving.compiled import load_for_serving, runtime_of
from mlops_assets.specs.model import get_spec
from mlops_assets.training import onnx_export
from mlops_assets.training.evaluate import evaluate
from mlops_assets.training.pipeline import build_pipeline
from mlops_assets.training.run import lineage_tags, train_and_log
from mlops_assets.training.tracking import Tracking, log_model, model_bytes, register
from mlops_assets.training.train import decision_threshold, fit, inputs, records, split
from mlops_assets_tests.conftest import pin_mlflow_http_env
from mlops_assets_tests.processes import BIN, free_port, start, stop, wait_until
from mlops_assets_tests.servers import server_env

END = dt.date(2027, 3, 14)


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    pin_mlflow_http_env(monkeypatch)  # configure() sets them process-wide
    t = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "art"))
    t.configure()
    return t


def _spec(name: str, estimator: str | None = None):
    spec = get_spec(name)
    if estimator:
        model = spec.model.model_copy(update={"estimator": estimator})
        spec = spec.model_copy(update={"model": model})
    return spec


def _features(spec, days: int = 6, rows: int = 250) -> pd.DataFrame:
    frames = [simulate_batch(spec.name, END - dt.timedelta(days=i), rows=rows) for i in range(days)]
    return build_features(pd.concat(frames, ignore_index=True), spec)


def _with_gaps(x: pd.DataFrame, spec) -> pd.DataFrame:
    """The holdout with what a client may send: missing numbers and categories, and a category
    never seen at training (the one-hot encoder ignores it)."""
    x = x.copy()
    x.loc[x.index[:15], spec.numeric_features[0]] = np.nan
    x.loc[x.index[15:30], spec.categorical_features[0]] = None
    x.loc[x.index[30:45], spec.categorical_features[-1]] = "never-seen"
    return x


def _train_and_register(tracking, spec, features) -> str:
    import mlflow

    mlflow.set_experiment(experiment_id=tracking.ensure_experiment(spec))
    tags = lineage_tags(spec, spec.model, "test-commit", spec.dataset.repository)
    with mlflow.start_run() as run:
        logged = train_and_log(tracking, spec, features, spec.model, tags)
    return register(
        tracking, spec.model_name, logged.model_uri, run.info.run_id, logged.tags
    ).version


def _register_pipeline(tracking, spec, features, model, onnx_bytes: bytes | None = None) -> str:
    """Log and register a pipeline built by the test (not by the spec), tagged with what
    converting it gave, as train_and_log does; ``onnx_bytes`` overrides the graph logged."""
    import mlflow

    conversion = onnx_export.convert(model, spec)
    data = onnx_bytes if onnx_bytes is not None else conversion.data
    example = inputs(features.head(5), spec)
    _, trusted = model_bytes(model)
    mlflow.set_experiment(experiment_id=tracking.ensure_experiment(spec))
    tags = {**lineage_tags(spec, spec.model, "test-commit", spec.dataset.repository)}
    tags.update(conversion.tags() if onnx_bytes is None else {"onnx.conversion": "converted"})
    with mlflow.start_run() as run:
        mlflow.set_tags(tags)
        info = log_model(model, example, model.predict(example), trusted)
        if data is not None:
            onnx_export.log_onnx(tracking, info.model_id, data)
    return register(tracking, spec.model_name, info.model_uri, run.info.run_id, tags).version


@pytest.mark.parametrize(
    ("name", "estimator"),
    [
        (name, estimator)
        for name in ("churn", "demand")
        for estimator in ("random_forest", "gradient_boosting", "linear")
    ]
    + [
        ("churn", "sklearn.ensemble.ExtraTreesClassifier"),
        ("demand", "sklearn.ensemble.ExtraTreesRegressor"),
    ],
)
def test_every_estimator_converts_and_answers_the_holdout_like_scikit_learn(name, estimator):
    spec = _spec(name, estimator)
    features = _features(spec, days=3, rows=200)
    model = fit(features, spec, spec.model).pipeline
    x = _with_gaps(split(features, spec, "holdout")[0], spec)

    conversion = onnx_export.convert(model, spec)
    assert conversion.ok, conversion.reason
    expected = "skl2onnx" if estimator == "linear" else "tree_ensemble_float64"
    assert conversion.converter == expected
    predictor = onnx_export.OnnxPredictor(conversion.data)
    parity = onnx_export.check_parity(model, predictor, x, spec)
    assert parity.passed, parity.reason
    assert parity.rows == len(x) and parity.label_mismatches == 0
    if estimator == "random_forest" or "ExtraTrees" in estimator:  # float64 splits: bit for bit
        assert parity.max_abs_diff == 0.0
    assert parity.max_abs_diff is not None and parity.max_abs_diff <= 1e-12


def test_a_forest_classifier_serves_by_onnx_runtime_after_the_gate_verified_it(tracking, tmp_path):
    spec = get_spec("churn")  # the packaged forest, threshold chosen on a validation slice
    features = _features(spec)
    x, y = split(features, spec, "holdout")
    version = _train_and_register(tracking, spec, features)
    tags = tracking.version(spec.model_name, version).tags
    assert tags["onnx.conversion"] == "converted"
    assert tags["onnx.converter"] == "tree_ensemble_float64"

    ev = evaluate(tracking, spec, version, x, y, spec.evaluation)
    assert ev.decision.promote and ev.parity is not None and ev.parity.passed
    tags = tracking.version(spec.model_name, version).tags
    assert tags["onnx.parity"] == "passed" and tags["serving.runtime"] == "onnxruntime"
    assert tags["onnx.parity_rows"] == str(len(x)) and tags["onnx.label_mismatches"] == "0"
    assert tags["onnx.tolerance"] == "atol=1e-09 rtol=1e-09"
    assert float(tags["onnx.max_abs_diff"]) == 0.0

    predictor, runtime = load_for_serving(tracking, spec.model_name, version)
    skops = tracking.load_model(spec.model_name, version)
    assert runtime == runtime_of(predictor) == "onnxruntime"
    assert isinstance(predictor, onnx_export.OnnxPredictor)
    assert decision_threshold(predictor) == decision_threshold(skops) != 0.5
    # What the server's Batcher does: P(class 1) from predict_proba, the label at the threshold.
    gaps = _with_gaps(x, spec)
    proba = predictor.predict_proba(gaps)[:, 1]
    labels = (proba >= decision_threshold(predictor)).astype("int64")
    assert np.array_equal(labels, skops.predict(gaps))
    assert np.array_equal(proba, skops.predict_proba(gaps)[:, 1])
    assert 0 < labels.sum() < len(labels)  # both classes answered: the comparison means something

    plain, runtime = load_for_serving(tracking, spec.model_name, version, compiled=False)
    assert runtime == runtime_of(plain) == "skops"

    # The real server over HTTP answers that version with ONNX Runtime, says so, and answers
    # what the skops model answers.
    record = records(x.head(1), spec)[0]
    expected = float(skops.predict_proba(x.head(1))[0, 1])
    _served_by_onnx_runtime(tracking, spec, version, record, expected, tmp_path)


def _served_by_onnx_runtime(tracking, spec, version, record, expected, tmp_path) -> None:
    port = free_port()
    env = server_env(
        MLFLOW_TRACKING_URI=tracking.tracking_uri,
        MLOPS_DATA_DIR=str(tmp_path / "data"),
        MLOPS_SERVING_TOKEN="t",
    )
    log = tmp_path / "serve.log"
    proc = start(
        [str(BIN / "mlops"), "serve", "--port", str(port), "--poll-seconds", "0"], env, log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until("churn served", lambda: _get(f"{url}/v2/models/churn/ready"), 120, proc, log)
        meta = json.loads(_get(f"{url}/v2/models/churn"))
        assert meta["parameters"]["runtimes"] == {version: "onnxruntime"}
        metric = f'mlops_model_runtime{{model="churn",version="{version}",runtime="onnxruntime"}} 1'
        assert metric in _get(f"{url}/metrics").decode()
        req = urllib.request.Request(
            f"{url}/predict",
            data=json.dumps({"model": "churn", "records": [record]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            answer = json.loads(r.read())
        assert answer["model_version"] == version
        assert answer["probabilities"] == [expected]
    finally:
        stop(proc)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def test_a_gradient_boosting_regressor_serves_by_onnx_runtime(tracking):
    spec = get_spec("demand")  # the packaged histogram gradient boosting
    features = _features(spec)
    x, y = split(features, spec, "holdout")
    version = _train_and_register(tracking, spec, features)
    ev = evaluate(tracking, spec, version, x, y, spec.evaluation)
    assert ev.parity is not None and ev.parity.passed, ev.parity
    assert tracking.version(spec.model_name, version).tags["serving.runtime"] == "onnxruntime"

    predictor, runtime = load_for_serving(tracking, spec.model_name, version)
    skops = tracking.load_model(spec.model_name, version)
    assert runtime == "onnxruntime"
    gaps = _with_gaps(x, spec)
    values, expected = predictor.predict(gaps), skops.predict(gaps)
    assert values.shape == expected.shape == (len(x),)
    assert np.max(np.abs(values - expected)) <= 1e-9 * np.max(np.abs(expected))
    with pytest.raises(AttributeError, match="regressor"):
        predictor.predict_proba(gaps)


def test_a_pipeline_that_does_not_convert_serves_by_skops_with_the_reason_recorded(tracking):
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    spec = get_spec("demand")
    features = _features(spec, days=3, rows=200)
    x_train, y_train = split(features, spec, "train")
    x, y = split(features, spec, "holdout")
    model = build_pipeline(spec, spec.model)  # skl2onnx has no TransformedTargetRegressor
    target = TransformedTargetRegressor(regressor=Ridge(), transformer=StandardScaler())
    model.steps[-1] = ("model", target)
    model.fit(x_train, y_train)
    version = _register_pipeline(tracking, spec, features, model)
    tags = tracking.version(spec.model_name, version).tags
    assert tags["onnx.conversion"] == "failed"
    assert "TransformedTargetRegressor" in tags["onnx.conversion_reason"]

    floor = spec.evaluation.model_copy(update={"floor": -10.0})  # the gate judges metrics only
    ev = evaluate(tracking, spec, version, x, y, floor)
    assert ev.decision.promote, ev.decision.reason
    assert ev.parity is not None and ev.parity.status == "unavailable"
    tags = tracking.version(spec.model_name, version).tags
    assert tags["onnx.parity"] == "unavailable" and tags["serving.runtime"] == "skops"
    assert "TransformedTargetRegressor" in tags["onnx.parity_reason"]
    predictor, runtime = load_for_serving(tracking, spec.model_name, version)
    assert runtime == runtime_of(predictor) == "skops"
    assert np.array_equal(predictor.predict(x), model.predict(x))


def test_a_graph_that_disagrees_on_the_holdout_is_refused_and_skops_serves(tracking):
    spec = get_spec("churn")
    features = _features(spec, days=3, rows=200)
    x, y = split(features, spec, "holdout")
    model = fit(features, spec, spec.model).pipeline
    # The graph of another model (a single shallow tree) logged as if it were this one's.
    other = spec.model.model_copy(update={"n_estimators": 1, "max_depth": 2})
    wrong = onnx_export.convert(fit(features, spec, other).pipeline, spec).data
    assert wrong is not None
    version = _register_pipeline(tracking, spec, features, model, onnx_bytes=wrong)

    ev = evaluate(tracking, spec, version, x, y, spec.evaluation)
    assert ev.decision.promote, ev.decision.reason  # parity never decides the gate
    assert ev.parity is not None and ev.parity.status == "failed"
    tags = tracking.version(spec.model_name, version).tags
    assert tags["onnx.parity"] == "failed" and tags["serving.runtime"] == "skops"
    assert f"of {len(x)} holdout" in tags["onnx.parity_reason"]
    assert float(tags["onnx.max_abs_diff"]) > 0.01
    predictor, runtime = load_for_serving(tracking, spec.model_name, version)
    assert runtime == "skops" and not isinstance(predictor, onnx_export.OnnxPredictor)


def test_a_custom_transformer_does_not_convert_and_says_which():
    from sklearn.base import BaseEstimator, TransformerMixin

    class Doubler(TransformerMixin, BaseEstimator):
        def fit(self, x, y=None):
            return self

        def transform(self, x):
            return np.asarray(x) * 2.0

    spec = get_spec("demand")
    features = _features(spec, days=2, rows=150)
    x, y = split(features, spec, "train")
    model = build_pipeline(spec, spec.model)
    numeric = model.steps[0][1].transformers[0][1]
    numeric.steps.append(("double", Doubler()))
    model.fit(x, y)
    conversion = onnx_export.convert(model, spec)
    assert not conversion.ok and conversion.data is None
    assert "Doubler" in conversion.reason
    assert conversion.tags() == {
        "onnx.conversion": "failed",
        "onnx.conversion_reason": conversion.reason,
    }


def test_a_graph_with_operators_outside_standard_onnx_is_refused():
    from onnx import TensorProto, helper

    node = helper.make_node("Exec", ["x"], ["y"], domain="com.example.anything")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [None, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    with pytest.raises(onnx_export.ConversionError, match=r"com\.example\.anything"):
        onnx_export.OnnxPredictor(model.SerializeToString(), "a tampered graph")


def test_the_training_assets_show_the_conversion_and_the_parity_in_the_ui(embedded_env):
    from mlops_assets.defs.keys import (
        dataset_key,
        features_key,
        model_evaluation_key,
        trained_model_key,
    )

    env = embedded_env
    spec = env.spec("churn")
    env.seed(spec)
    training = [trained_model_key("churn"), model_evaluation_key("churn")]
    result = env.run([dataset_key("churn"), features_key("churn"), *training])
    assert result.success

    def meta(key) -> dict:
        mat = env.instance.get_latest_materialization_event(key).asset_materialization
        return {k: v.value for k, v in mat.metadata.items()}

    trained, evaluation = meta(training[0]), meta(training[1])
    assert trained["onnx_conversion"] == "converted"
    assert evaluation["onnx_parity"] == "passed", evaluation["onnx_parity_reason"]
    assert evaluation["serving_runtime"] == "onnxruntime"
    assert evaluation["onnx_max_abs_diff"] == 0.0
    version = str(trained["model_version"])
    predictor, runtime = load_for_serving(env.tracking(), spec.model_name, version)
    assert runtime == "onnxruntime" and predictor.threshold == trained["decision_threshold"]
