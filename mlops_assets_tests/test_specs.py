import hashlib

import pytest

from mlops_assets.specs import load_specs
from mlops_assets.specs.model import get_spec, load_spec_file

GOOD = (
    "name: fraud\ndescription: d\ntask: classification\n"
    "dataset:\n  repository: fraud\n  prefix: batches/\n  key: {key}\n  timestamp: day\n"
    "  columns:\n    id: {{dtype: string}}\n    day: {{dtype: date}}\n"
    "    amount: {{dtype: float, min: 0}}\n    y: {{dtype: int, allowed: [0, 1]}}\n"
    "target: y\nfeatures: [amount]\n"
    "evaluation: {{metric: roc_auc, floor: 0.6}}\n"
)


def test_packaged_specs_load():
    assert {s.name for s in load_specs()} == {"churn", "demand"}
    assert get_spec("demand").task == "regression"


def test_a_second_model_is_a_few_lines_of_spec(tmp_path):
    path = tmp_path / "fraud.yaml"
    path.write_text(GOOD.format(key="id"))
    specs = load_specs(str(tmp_path))
    assert [s.name for s in specs] == ["fraud"]
    assert specs[0].numeric_features == ["amount"]
    assert specs[0].model_name == "fraud"
    assert specs[0].evaluation.tolerance == 0.03  # the roadmap's ±3 % by default
    assert specs[0].model.estimator == "random_forest"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.format(key="nope"), r"dataset: .*key 'nope' is not one of the columns"),
        (GOOD.format(key="id").replace("task: classification", "task: ranking"), r"task: "),
        (GOOD.format(key="id").replace("[amount]", "[amount, colour]"), r"\['colour'\]"),
        ("name: [", r"not valid YAML"),
        (
            GOOD.format(key="id").replace("metric: roc_auc", "metric: rmse"),
            r"evaluation.metric 'rmse' is not a classification metric: use one of accuracy",
        ),
        (
            GOOD.format(key="id") + "model: {n_estimators: 0}\n",
            r"model.n_estimators: Input should be greater than or equal to 1",
        ),
        (GOOD.format(key="id").replace("floor: 0.6}", "floor: 0.6, tolerance: 2}"), "tolerance"),
        (
            GOOD.format(key="id").replace("day: {dtype: date}", "day: {dtype: date, min: 0}"),
            r"min/max apply to int and float columns, not date",
        ),
    ],
)
def test_bad_spec_names_the_field(tmp_path, text, message):
    path = tmp_path / "fraud.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"model spec {path}: .*{message}"):
        load_spec_file(path)


def test_unknown_spec_lists_the_known_ones():
    with pytest.raises(KeyError, match="known: churn, demand"):
        get_spec("nope")


def _labelled(target: str, extra: str = "") -> str:
    """GOOD with the target column ``y`` given as ``target`` and ``extra`` top-level lines."""
    return GOOD.format(key="id").replace("y: {dtype: int, allowed: [0, 1]}", f"y: {target}") + extra


MALIGNANT = "{dtype: category, allowed: [benign, malignant]}"


@pytest.mark.parametrize(
    ("target", "extra", "positive", "negative"),
    [
        ("{dtype: int, allowed: [0, 1]}", "", 1, 0),  # 0/1: 1 is positive, as ever
        ("{dtype: int}", "", 1, 0),
        ("{dtype: int, allowed: [0, 1]}", "positive_class: 0\n", 0, 1),
        (MALIGNANT, "positive_class: malignant\n", "malignant", "benign"),
        ("{dtype: category, allowed: ['yes', 'no']}", "positive_class: 'no'\n", "no", "yes"),
        ("{dtype: int, allowed: [1, 2]}", "positive_class: '2'\n", 2, 1),
    ],
)
def test_a_binary_target_names_its_positive_class(tmp_path, target, extra, positive, negative):
    path = tmp_path / "fraud.yaml"
    path.write_text(_labelled(target, extra))
    spec = load_spec_file(path)
    assert (spec.positive_label, spec.negative_label) == (positive, negative)


@pytest.mark.parametrize(
    ("target", "extra", "message"),
    [
        (
            MALIGNANT,
            "",
            r"positive_class: target 'y' has the labels \['benign', 'malignant'\], not 0/1: name "
            r"the one that counts as positive .*e.g. positive_class: 'malignant'",
        ),
        (
            MALIGNANT,
            "positive_class: cancer\n",
            r"positive_class 'cancer' is not one of the labels of target 'y', "
            r"\['benign', 'malignant'\] \(dataset.columns.y.allowed\): name one of them",
        ),
        (
            "{dtype: category}",
            "positive_class: malignant\n",
            r"positive_class 'malignant': list the target's two labels \(dataset.columns.y.allowed",
        ),
        (
            "{dtype: string}",
            "",
            r"positive_class: target 'y' is a string column: list its two labels",
        ),
        (
            "{dtype: category, allowed: [a, b, c]}",
            "positive_class: a\n",
            r"dataset.columns.y.allowed: a classification target has two classes, 'y' allows 3 "
            r"\(a, b, c\): list its two labels, or set task: multiclass",
        ),
        (
            "{dtype: category, allowed: ['yes', 'no']}",
            "positive_class: yes\n",
            r"positive_class: .*got the YAML boolean true .*quote the label "
            r".*positive_class: 'yes'",
        ),
        (
            "{dtype: category, allowed: [yes, no]}",
            "positive_class: 'yes'\n",
            r"dataset.columns.y.allowed: Value error, holds a YAML boolean "
            r".*allowed: \['yes', 'no'\]",
        ),
        (
            "{dtype: float}",
            "positive_class: 1\n",
            r"positive_class 1: target 'y' is a float column; labels belong in an int, string",
        ),
    ],
)
def test_a_binary_target_without_a_clear_positive_class_names_the_field(
    tmp_path, target, extra, message
):
    path = tmp_path / "fraud.yaml"
    path.write_text(_labelled(target, extra))
    with pytest.raises(ValueError, match=rf"model spec {path}: .*{message}"):
        load_spec_file(path)


def test_positive_class_is_for_classification_only(tmp_path):
    path = tmp_path / "fraud.yaml"
    text = _labelled("{dtype: category, allowed: [a, b, c]}", "positive_class: a\n")
    path.write_text(
        text.replace("task: classification", "task: multiclass").replace(
            "metric: roc_auc", "metric: accuracy"
        )
    )
    with pytest.raises(ValueError, match=r"positive_class applies to classification only"):
        load_spec_file(path)


def test_a_spec_without_positive_class_keeps_its_digest(tmp_path):
    """Code versions come from the spec's digest: adding the field left 0/1 specs' alone."""
    path = tmp_path / "fraud.yaml"
    path.write_text(GOOD.format(key="id"))
    spec = load_spec_file(path)
    named = spec.model_copy(update={"positive_class": 1})
    assert spec.digest() != named.digest()
    old = spec.model_dump_json(exclude={"serving", "positive_class"})
    assert spec.digest() == hashlib.sha256(old.encode()).hexdigest()[:10]
