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
