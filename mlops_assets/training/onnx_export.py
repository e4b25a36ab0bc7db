"""Compiled inference: a trained pipeline as an ONNX graph, the predictor that runs it with ONNX
Runtime, and the parity check the gate runs before such a graph may serve.

The skops pipeline stays the artifact of record; the ONNX graph is a faster copy that serves
only once it has answered the whole holdout like the pipeline did.

How the graph stays faithful:
- Imputation happens in the predictor, in float64 numpy, with the fill values the fitted
  imputers learnt (written into the graph's metadata): ONNX's Imputer works in float32 and
  ONNX Runtime has no double kernel for it, and it cannot fill a string column's None.
- Forests and histogram gradient boosting become one ``TreeEnsemble`` node (ai.onnx.ml
  opset 5) with float64 thresholds and leaf values, emitted here from the fitted trees.
  skl2onnx's own tree converters write float32 thresholds, which flip a split whenever an input
  falls between a threshold and its float32 rounding (measured: P differences of 0.02 on the
  churn forest). A scikit-learn forest compares float32 inputs with float64 thresholds, so the
  graph casts its input to float32 and back before the trees; gradient boosting compares
  float64 with float64 and gets no cast. Averages and sums are taken over the trees in their
  order, as scikit-learn does.
- Everything else (scaling, one-hot encoding, a linear model) is skl2onnx's converter,
  with float64 inputs.

Loading an ONNX graph executes no code: it is a protobuf of operators from the standard
domains, checked to use nothing else (``OnnxPredictor`` refuses other domains).
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_assets.specs import ModelSpec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from mlops_assets.training.tracking import Tracking

ONNX_FILE = "model.onnx"
ONNX_ARTIFACT_DIR = "onnx"  # inside the logged model, beside the skops file
OPSET = {"": 21, "ai.onnx.ml": 5}
ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
# Parity: labels must be identical; P(class 1) or the value within |onnx - skops| <= ATOL +
# RTOL * |skops|. The float64 tree graphs differ from scikit-learn by a few ulps at most.
PARITY_ATOL = 1e-9
PARITY_RTOL = 1e-9

# Version and run tags
TAG_CONVERSION = "onnx.conversion"  # converted | failed
TAG_CONVERSION_REASON = "onnx.conversion_reason"
TAG_CONVERTER = "onnx.converter"
TAG_PARITY = "onnx.parity"  # passed | failed | unavailable
TAG_PARITY_REASON = "onnx.parity_reason"
TAG_MAX_DIFF = "onnx.max_abs_diff"
TAG_TOLERANCE = "onnx.tolerance"
TAG_LABEL_MISMATCHES = "onnx.label_mismatches"
TAG_PARITY_ROWS = "onnx.parity_rows"
TAG_RUNTIME = "serving.runtime"  # onnxruntime | skops
ONNXRUNTIME, SKOPS = "onnxruntime", "skops"


class ConversionError(ValueError):
    """The pipeline cannot become an ONNX graph here; the message says why."""


@dataclass(frozen=True)
class Conversion:
    """The outcome of one conversion attempt: the graph's bytes, or why there are none."""

    data: bytes | None
    converter: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.data is not None

    def tags(self) -> dict[str, str]:
        if self.ok:
            return {TAG_CONVERSION: "converted", TAG_CONVERTER: self.converter}
        return {TAG_CONVERSION: "failed", TAG_CONVERSION_REASON: self.reason[:4000]}


# ---- conversion ----------------------------------------------------------------------------


def _inner(model) -> tuple[Pipeline, float | None]:
    """The fitted pipeline inside a classifier's FixedThresholdClassifier, and its threshold
    (skl2onnx has no converter for the wrapper: the threshold is applied by the predictor)."""
    from sklearn.model_selection import FixedThresholdClassifier
    from sklearn.pipeline import Pipeline

    if isinstance(model, FixedThresholdClassifier):
        from mlops_assets.training.train import decision_threshold

        inner = model.estimator_
        threshold: float | None = decision_threshold(model)
    else:
        inner, threshold = model, None
    if not isinstance(inner, Pipeline) or len(inner.steps) != 2:
        raise ConversionError(
            f"expected a fitted Pipeline(preprocess, model), got {type(inner).__name__}"
        )
    return inner, threshold


def _strip_imputers(pre, spec: ModelSpec):
    """A copy of the fitted ColumnTransformer without its SimpleImputers, and the fill value of
    every input column (the predictor fills before the graph runs)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.utils._missing import is_scalar_nan

    if not isinstance(pre, ColumnTransformer):
        raise ConversionError(f"preprocessing is a {type(pre).__name__}, not a ColumnTransformer")
    pre = copy.deepcopy(pre)
    fills: dict[str, float | str] = {}
    for name, transformer, columns in pre.transformers_:
        if transformer == "drop":
            continue
        if not isinstance(transformer, Pipeline) or not isinstance(
            transformer.steps[0][1], SimpleImputer
        ):
            raise ConversionError(
                f"column group {name!r}: {type(transformer).__name__} does not start with a "
                "SimpleImputer; only imputer-first groups convert"
            )
        imputer = transformer.steps[0][1]
        if not is_scalar_nan(imputer.missing_values) or imputer.add_indicator:
            raise ConversionError(
                f"column group {name!r}: the imputer must replace NaN/None without indicator"
            )
        for column, value in zip(columns, imputer.statistics_, strict=True):
            if isinstance(value, float) and math.isnan(value):
                raise ConversionError(
                    f"column {column!r} had no value at training (its imputer drops it)"
                )
            fills[column] = value if isinstance(value, str) else float(value)
        if len(transformer.steps) == 1:
            raise ConversionError(f"column group {name!r} is an imputer alone")
        transformer.steps = transformer.steps[1:]
    missing = [c for c in spec.features if c not in fills]
    if missing:
        raise ConversionError(f"features {missing} are not inputs of the ColumnTransformer")
    return pre, fills


def _initial_types(spec: ModelSpec):
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    return [
        (c, DoubleTensorType([None, 1]))
        if c in spec.numeric_features
        else (c, StringTensorType([None, 1]))
        for c in spec.features
    ]


def _tree_arrays(trees: list[tuple[str, object]]) -> dict:
    """TreeEnsemble attributes for ``trees``: each ``("leaf", value)`` is a constant tree,
    each ``("sklearn", tree_)`` a fitted scikit-learn tree (leaf value: ``value[:, 0, -1]``,
    P(class 1) of a binary classifier or the regression value), each ``("hist", nodes)`` a
    histogram-gradient-boosting predictor's node array. Splits are ``x <= threshold`` (true =
    scikit-learn's left child), in float64."""
    import numpy as np
    from onnx import numpy_helper

    cols: dict[str, list] = {
        k: [] for k in ("feat", "split", "true", "true_leaf", "false", "false_leaf", "missing")
    }
    leaves: list[float] = []
    roots: list[int] = []

    def node(feat: int, split: float, true: tuple[int, int], false: tuple[int, int], miss: int):
        for key, v in (
            ("feat", feat),
            ("split", split),
            ("true", true[0]),
            ("true_leaf", true[1]),
            ("false", false[0]),
            ("false_leaf", false[1]),
            ("missing", miss),
        ):
            cols[key].append(v)

    def leaf(value: float) -> tuple[int, int]:
        leaves.append(float(value))
        return len(leaves) - 1, 1

    for kind, tree in trees:
        if kind == "leaf":  # a constant: one split whose two branches meet in the same leaf
            roots.append(len(cols["feat"]))
            constant = leaf(float(tree))  # type: ignore[arg-type]
            node(0, 0.0, constant, constant, 0)
            continue
        if kind == "sklearn":
            t = tree
            left, right = t.children_left, t.children_right  # type: ignore[attr-defined]
            feature, threshold = t.feature, t.threshold  # type: ignore[attr-defined]
            value = t.value[:, 0, -1]  # type: ignore[attr-defined]
            go_left = getattr(t, "missing_go_to_left", np.zeros(len(left), dtype=np.uint8))
            is_leaf = left == -1
        else:
            n = tree
            left, right = n["left"], n["right"]  # type: ignore[index]
            feature, threshold = n["feature_idx"], n["num_threshold"]  # type: ignore[index]
            value, go_left = n["value"], n["missing_go_to_left"]  # type: ignore[index]
            is_leaf = n["is_leaf"].astype(bool)  # type: ignore[index]
            if n["is_categorical"].any():  # type: ignore[index]
                raise ConversionError("categorical splits inside the booster do not convert")
        roots.append(len(cols["feat"]))
        if is_leaf[0]:  # a tree that never split
            constant = leaf(float(value[0]))
            node(0, 0.0, constant, constant, 0)
            continue
        interior = np.flatnonzero(~is_leaf)
        ids = {int(i): len(cols["feat"]) + k for k, i in enumerate(interior)}
        kids = {int(i): leaf(float(value[i])) for i in np.flatnonzero(is_leaf)}
        for i in interior:
            true, false = int(left[i]), int(right[i])
            node(
                int(feature[i]),
                float(threshold[i]),
                kids[true] if is_leaf[true] else (ids[true], 0),
                kids[false] if is_leaf[false] else (ids[false], 0),
                int(go_left[i]),
            )
    return {
        "n_targets": 1,
        "tree_roots": roots,
        "nodes_featureids": cols["feat"],
        "nodes_modes": numpy_helper.from_array(np.zeros(len(cols["feat"]), dtype=np.uint8)),
        "nodes_splits": numpy_helper.from_array(np.asarray(cols["split"], dtype=np.float64)),
        "nodes_truenodeids": cols["true"],
        "nodes_trueleafs": cols["true_leaf"],
        "nodes_falsenodeids": cols["false"],
        "nodes_falseleafs": cols["false_leaf"],
        "nodes_missing_value_tracks_true": cols["missing"],
        "leaf_targetids": [0] * len(leaves),
        "leaf_weights": numpy_helper.from_array(np.asarray(leaves, dtype=np.float64)),
    }


def _tree_nodes(estimator) -> tuple[list, int, str] | None:
    """The estimator as TreeEnsemble inputs: (trees, aggregate function, what comes before or
    after the node); None for an estimator that is not a forest or a booster (skl2onnx converts
    it); ConversionError for a forest or booster this emitter does not handle."""
    import numpy as np
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )

    average, total = 0, 1
    # extremely randomized trees are forests of the same trees, averaged the same way
    forests = (
        RandomForestClassifier | RandomForestRegressor | ExtraTreesClassifier | ExtraTreesRegressor
    )
    if isinstance(estimator, forests):
        if getattr(estimator, "n_outputs_", 1) != 1:
            raise ConversionError("multi-output forests do not convert")
        if hasattr(estimator, "classes_") and len(estimator.classes_) != 2:
            raise ConversionError("only binary forests convert")
        return [("sklearn", e.tree_) for e in estimator.estimators_], average, "float32_input"
    if isinstance(estimator, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
        if getattr(estimator, "n_trees_per_iteration_", 1) != 1:
            raise ConversionError("only binary or single-target gradient boosting converts")
        if isinstance(estimator, HistGradientBoostingRegressor) and estimator.loss not in (
            "squared_error",
            "absolute_error",
            "quantile",
        ):
            raise ConversionError(f"loss {estimator.loss!r} has a link this graph lacks")
        baseline = float(np.asarray(estimator._baseline_prediction).ravel()[0])
        trees = [("leaf", baseline)]
        trees += [("hist", p[0].nodes) for p in estimator._predictors]
        post = "sigmoid" if isinstance(estimator, HistGradientBoostingClassifier) else ""
        return trees, total, post
    return None


def _append_trees(graph_model, pre_output: str, estimator) -> None:
    """Append the estimator's TreeEnsemble (and cast or sigmoid) after the preprocessing graph;
    the graph's single output becomes ``score``: P(class 1) or the value, float64, [N, 1]."""
    from onnx import TensorProto, helper

    found = _tree_nodes(estimator)
    if found is None:
        raise ConversionError(f"no float64 tree emitter for {type(estimator).__name__}")
    trees, aggregate, post = found
    graph = graph_model.graph
    nodes = []
    source = pre_output
    if post == "float32_input":  # as scikit-learn's forests: float32 inputs, float64 splits
        nodes.append(helper.make_node("Cast", [source], ["x_f32"], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Cast", ["x_f32"], ["x_f64"], to=TensorProto.DOUBLE))
        source = "x_f64"
    raw = "raw_score" if post == "sigmoid" else "score"
    nodes.append(
        helper.make_node(
            "TreeEnsemble",
            [source],
            [raw],
            domain="ai.onnx.ml",
            aggregate_function=aggregate,
            **_tree_arrays(trees),
        )
    )
    if post == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", [raw], ["score"]))
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("score", TensorProto.DOUBLE, [None, 1]))
    for opset in graph_model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, OPSET[""])
        elif opset.domain == "ai.onnx.ml":
            opset.version = OPSET["ai.onnx.ml"]
    if not any(o.domain == "ai.onnx.ml" for o in graph_model.opset_import):
        graph_model.opset_import.append(helper.make_opsetid("ai.onnx.ml", OPSET["ai.onnx.ml"]))


def convert(model, spec: ModelSpec) -> Conversion:
    """The trained model (a Pipeline, or a classifier's FixedThresholdClassifier around one) as
    ONNX bytes, or the reason it does not convert. Never raises for an unconvertible model."""
    try:
        data, converter = _convert(model, spec)
    except ConversionError as e:
        return Conversion(None, reason=str(e))
    except Exception as e:  # skl2onnx raises many kinds (MissingShapeCalculator, RuntimeError)
        first = (str(e).strip().splitlines() or [""])[0]  # skl2onnx adds paragraphs of advice
        return Conversion(None, reason=f"{type(e).__name__}: {first}")
    return Conversion(data, converter)


def _convert(model, spec: ModelSpec) -> tuple[bytes, str]:
    import onnx
    from skl2onnx import convert_sklearn
    from sklearn.pipeline import Pipeline

    if spec.task == "multiclass":
        # The predictor and its parity check answer one score per row (P(class 1) or the value)
        raise ConversionError(
            "multiclass models are not compiled to ONNX here: the skops model serves them"
        )
    inner, threshold = _inner(model)
    pre, estimator = inner.steps[0][1], inner.steps[1][1]
    pre, fills = _strip_imputers(pre, spec)
    classify = spec.task == "classification"
    if _tree_nodes(estimator) is not None:  # else not a forest or booster: skl2onnx converts it
        graph = convert_sklearn(pre, initial_types=_initial_types(spec), target_opset=OPSET[""])
        _append_trees(graph, graph.graph.output[0].name, estimator)
        output, column, converter = "score", 0, "tree_ensemble_float64"
    else:
        options = {id(estimator): {"zipmap": False}} if classify else None
        graph = convert_sklearn(
            Pipeline([("preprocess", pre), ("model", estimator)]),
            initial_types=_initial_types(spec),
            options=options,
            target_opset=OPSET[""],
        )
        outputs = [o.name for o in graph.graph.output]
        output = outputs[1] if classify else outputs[0]
        column, converter = (1 if classify else 0), "skl2onnx"
    meta = {
        "mlops.task": spec.task,
        "mlops.features": json.dumps(list(spec.features)),
        "mlops.numeric": json.dumps(list(spec.numeric_features)),
        "mlops.fill": json.dumps(fills),
        "mlops.output": output,
        "mlops.output_column": str(column),
        "mlops.threshold": "" if threshold is None else repr(threshold),
        "mlops.converter": converter,
    }
    if classify:  # the labels it answers, and which one P(positive) is of (None: the second)
        from mlops_assets.training.train import classes

        meta["mlops.classes"] = json.dumps(classes(inner))
        meta["mlops.pos_label"] = json.dumps(getattr(model, "pos_label", None))
    onnx.helper.set_model_props(graph, meta)
    onnx.checker.check_model(graph)
    return graph.SerializeToString(), converter


# ---- the predictor -------------------------------------------------------------------------


class OnnxPredictor:
    """The serving interface of the skops model, answered by ONNX Runtime: ``predict_proba``
    and ``predict`` (at ``threshold``) for a classifier, ``predict`` for a regressor.

    Built from the graph's bytes alone: its metadata names the inputs, fill values, output and
    threshold. Nothing in the file is executed; operators outside the standard ONNX domains are
    refused before a session is created.
    """

    runtime = ONNXRUNTIME

    def __init__(self, data: bytes, what: str = "ONNX model"):
        import onnx
        import onnxruntime as ort

        proto = onnx.load_model_from_string(data)
        domains = {n.domain for n in proto.graph.node} | {o.domain for o in proto.opset_import}
        foreign = sorted(domains - ALLOWED_DOMAINS)
        if foreign:
            raise ConversionError(
                f"{what}: operators from domains {foreign} are not standard ONNX; refusing it"
            )
        if proto.functions:
            raise ConversionError(f"{what}: local functions are not produced here; refusing it")
        meta = {p.key: p.value for p in proto.metadata_props}
        try:
            self.task = meta["mlops.task"]
            self.features: list[str] = json.loads(meta["mlops.features"])
            self.numeric = set(json.loads(meta["mlops.numeric"]))
            self.fill: dict = json.loads(meta["mlops.fill"])
            self.output = meta["mlops.output"]
            self.column = int(meta["mlops.output_column"])
            threshold = meta.get("mlops.threshold", "")
            self.converter = meta.get("mlops.converter", "")
        except (KeyError, ValueError) as e:
            raise ConversionError(
                f"{what}: its metadata lacks {e}: it was not written by this platform"
            ) from None
        # A classifier's label threshold, read by decision_threshold() like the skops model's.
        self.threshold: float | None = float(threshold) if threshold else None
        # ... and its classes and positive one, read by positive_column() like the skops
        # model's (a graph written before labels were recorded: 0/1, positive 1)
        import numpy as np

        self.classes_ = np.asarray(json.loads(meta.get("mlops.classes", "[0, 1]")))
        self.pos_label = json.loads(meta.get("mlops.pos_label", "null"))
        options = ort.SessionOptions()
        # One thread: the server predicts on its event loop; small batches gain nothing from
        # a pool, and one thread sums the trees in order (the parity that was checked).
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            data, sess_options=options, providers=["CPUExecutionProvider"]
        )
        # skl2onnx names each graph input after its column with characters such as spaces
        # replaced ('mean radius' -> 'mean_radius'), in the order of the features.
        names = [i.name for i in self.session.get_inputs()]
        if len(names) != len(self.features):
            raise ConversionError(
                f"{what}: {len(names)} graph inputs for {len(self.features)} features"
            )
        self.inputs = dict(zip(self.features, names, strict=True))

    def _feed(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        import numpy as np
        import pandas as pd

        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise ValueError(f"input lacks feature columns {missing}")
        feed = {}
        for c in self.features:
            if c in self.numeric:
                x = frame[c].to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
                x[np.isnan(x)] = self.fill[c]
                if not np.isfinite(x).all():  # as scikit-learn's input check refuses them
                    raise ValueError(f"column {c!r} holds an infinite value")
                feed[self.inputs[c]] = x.reshape(-1, 1)
            else:
                values = frame[c].to_numpy(dtype=object)
                x = np.array(
                    [self.fill[c] if _missing(v, pd.NA) else str(v) for v in values], dtype=object
                )
                feed[self.inputs[c]] = x.reshape(-1, 1)
        return feed

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        """P(second class) for a classifier (P(class 1) of a 0/1 target), the value for a
        regressor, float64, one per row."""
        import numpy as np

        out = self.session.run([self.output], self._feed(frame))[0]
        out = np.asarray(out, dtype=np.float64)
        return out[:, self.column] if out.ndim == 2 else out

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        import numpy as np

        if self.task != "classification":
            raise AttributeError("a regressor has no predict_proba")
        p = self.scores(frame)
        return np.column_stack([1.0 - p, p])

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """The label: the positive class where P(positive) >= the threshold, else the other."""
        import numpy as np

        from mlops_assets.training.train import positive_column

        if self.task != "classification":
            return self.scores(frame)
        threshold = 0.5 if self.threshold is None else self.threshold
        column = positive_column(self)
        above = self.predict_proba(frame)[:, column] >= threshold
        return self.classes_[np.where(above, column, 1 - column)]


def _missing(v, na: object) -> bool:
    """None, NaN or pandas' NA (``na``: the caller has pandas, this is called once a cell)."""
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is na


# ---- parity ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Parity:
    status: str  # passed | failed | unavailable
    reason: str
    rows: int = 0
    max_abs_diff: float | None = None
    label_mismatches: int | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def runtime(self) -> str:
        return ONNXRUNTIME if self.passed else SKOPS

    def tags(self) -> dict[str, str]:
        tags = {
            TAG_PARITY: self.status,
            TAG_PARITY_REASON: self.reason[:4000],
            TAG_TOLERANCE: f"atol={PARITY_ATOL:g} rtol={PARITY_RTOL:g}",
            TAG_RUNTIME: self.runtime,
            TAG_PARITY_ROWS: str(self.rows),
        }
        if self.max_abs_diff is not None:
            tags[TAG_MAX_DIFF] = repr(self.max_abs_diff)
        if self.label_mismatches is not None:
            tags[TAG_LABEL_MISMATCHES] = str(self.label_mismatches)
        return tags


def check_parity(model, predictor: OnnxPredictor, x: pd.DataFrame, spec: ModelSpec) -> Parity:
    """Run both on every row of ``x``: labels identical (classifiers, at the model's own
    threshold) and P(class 1) or values within tolerance. Never raises for a mismatch."""
    import numpy as np

    from mlops_assets.training.train import classes, decision_threshold

    rows = len(x)
    if rows == 0:
        return Parity("unavailable", "the holdout is empty: nothing to compare on")
    problems = []
    if spec.task == "classification":
        ref = np.asarray(model.predict_proba(x)[:, 1], dtype=np.float64)
        ref_labels = np.asarray(model.predict(x))
        got = predictor.scores(x)
        mismatches = int((ref_labels != np.asarray(predictor.predict(x))).sum())
        if predictor.threshold != decision_threshold(model):
            problems.append(
                f"threshold {predictor.threshold} in the graph, {decision_threshold(model)} in "
                "the model"
            )
        graph = (classes(predictor), predictor.pos_label)
        kept = (classes(model), getattr(model, "pos_label", None))
        if graph != kept:
            problems.append(f"classes and positive class {graph} in the graph, {kept} in the model")
        what = "P(class 1)"
    else:
        ref = np.asarray(model.predict(x), dtype=np.float64)
        got = predictor.scores(x)
        mismatches, what = 0, "value"
    if got.shape != ref.shape or not np.isfinite(got).all():
        return Parity("failed", f"ONNX answered shape {got.shape}, expected {ref.shape}", rows)
    diff = np.abs(got - ref)
    worst = float(diff.max())
    over = int((diff > PARITY_ATOL + PARITY_RTOL * np.abs(ref)).sum())
    if mismatches:
        problems.append(f"{mismatches} of {rows} holdout labels differ")
    if over:
        problems.append(
            f"{over} of {rows} holdout rows differ in {what} beyond atol={PARITY_ATOL:g} "
            f"rtol={PARITY_RTOL:g}"
        )
    if problems:
        reason = f"{'; '.join(problems)} (largest {what} gap {worst:.3g})"
        return Parity("failed", reason, rows, worst, mismatches)
    labels = "identical labels, " if spec.task == "classification" else ""
    reason = f"{rows} holdout rows: {labels}largest {what} gap {worst:.3g}"
    return Parity("passed", reason, rows, worst, mismatches)


# ---- the graph beside the skops model ------------------------------------------------------


def log_onnx(tracking: Tracking, model_id: str, data: bytes) -> None:
    """Store the graph in the logged model's own artifacts (``onnx/model.onnx`` beside the skops
    file), so the registered version carries both."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, ONNX_FILE)
        path.write_bytes(data)
        tracking.call(
            f"log the ONNX graph of model {model_id}",
            lambda c: c.log_model_artifact(model_id, str(path), ONNX_ARTIFACT_DIR),
        )


def load_onnx_bytes(tracking: Tracking, name: str, version: str) -> bytes:
    """The ONNX graph registered with ``version`` of ``name`` (RegistryError if it has none)."""
    import mlflow

    from mlops_assets.training.tracking import RegistryError, TrackingUnavailable

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = tracking.call(
                f"download the ONNX graph of version {version} of {name!r}",
                lambda c: mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{name}/{version}/{ONNX_ARTIFACT_DIR}/{ONNX_FILE}",
                    dst_path=tmp,
                    tracking_uri=tracking.tracking_uri,
                ),
            )
        except TrackingUnavailable:
            raise
        except Exception as e:
            raise RegistryError(
                f"version {version} of {name!r} has no ONNX graph "
                f"({ONNX_ARTIFACT_DIR}/{ONNX_FILE}): {type(e).__name__}: {str(e)[:200]}"
            ) from None
        return Path(local).read_bytes()


def verify(tracking: Tracking, spec: ModelSpec, version: str, model, x: pd.DataFrame) -> Parity:
    """The gate's parity check of one registered version: its ONNX graph (if training could
    convert it) against its skops ``model`` on every row of ``x``. A graph that is missing,
    fails to load or disagrees yields a Parity saying why, never an exception: the version then
    serves with skops."""
    from mlops_assets.training.tracking import RegistryError, TrackingUnavailable

    name = spec.model_name
    try:
        data = load_onnx_bytes(tracking, name, version)
    except RegistryError:
        return Parity(
            "unavailable", f"not converted to ONNX: {_conversion_reason(tracking, name, version)}"
        )
    try:
        predictor = OnnxPredictor(data, f"version {version} of {name!r}")
        return check_parity(model, predictor, x, spec)
    except TrackingUnavailable:
        raise
    except Exception as e:
        return Parity("failed", f"the ONNX graph could not be run: {type(e).__name__}: {e}")


def _conversion_reason(tracking: Tracking, name: str, version: str) -> str:
    """Why training logged no graph, from the version's tags or its run's."""
    mv = tracking.version(name, version)
    tags = dict(mv.tags or {})
    if TAG_CONVERSION_REASON not in tags and mv.run_id:
        run = tracking.call(f"read run {mv.run_id}", lambda c: c.get_run(mv.run_id))
        tags = {**run.data.tags, **tags}
    return tags.get(TAG_CONVERSION_REASON) or "no ONNX graph was logged with this version"
