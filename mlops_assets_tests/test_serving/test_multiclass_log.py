"""A multiclass model's answers in the prediction log: the class and ``{class: P(class)}`` per
row, as the server logs them, read back by the monitoring windows (drift and live performance)
before and after the log's upkeep compacts them into Parquet.

The real prediction log and its committer write the rows; a date far after the rows is passed
to the upkeep (never the calendar)."""

import datetime as dt

import pandas as pd
import pytest

from mlops_assets.demo import DEMO_SPECS_DIR
from mlops_assets.monitoring.labels import commit_labels, labels_repository
from mlops_assets.monitoring.performance import assess_window
from mlops_assets.monitoring.upkeep import upkeep
from mlops_assets.monitoring.windows import current_window, labelled_window
from mlops_assets.serving.predlog import PredictionLog, predictions_repository, store_committer
from mlops_assets.specs.model import load_spec_file
from mlops_assets.store.local import LocalStore

SPEC = load_spec_file(DEMO_SPECS_DIR / "tickets.yaml")
TEAMS = ("account", "billing", "technical")
ANSWERS = [
    ("billing", {"account": 0.1, "billing": 0.7, "technical": 0.2}),
    ("technical", {"account": 0.05, "billing": 0.15, "technical": 0.8}),
    ("account", {"account": 0.6, "billing": 0.3, "technical": 0.1}),
    ("technical", {"account": 0.2, "billing": 0.35, "technical": 0.45}),
]
TRUTH = ["billing", "technical", "billing", "technical"]


def _inputs(n: int) -> dict:
    return {
        "channel": ["email", "chat", "phone", "chat"][:n],
        "plan": ["free", "pro", "enterprise", "free"][:n],
        "message_words": [40.0, 120.0, 60.0, 300.0][:n],
        "error_codes": [0.0, 3.0, 1.0, 2.0][:n],
        "attachments": [0.0, 2.0, 0.0, 1.0][:n],
        "amount_quoted": [35.5, 0.0, 0.0, 12.0][:n],
        "account_age_days": [100.0, None, 800.0, 20.0][:n],
    }


@pytest.fixture
def logged(tmp_path):
    """Four answered rows of version 1 in the committed log, and their labels delivered."""
    root = tmp_path / "lakefs-local"
    store = LocalStore(root, predictions_repository(SPEC.dataset.repository))
    log = PredictionLog(
        tmp_path / "serving-log",
        commit=store_committer(lambda _: store, {SPEC.name: store.repository}),
    )
    outputs = {"prediction": [a for a, _ in ANSWERS], "probability": [p for _, p in ANSWERS]}
    log.append(SPEC.name, "1", "req-1", _inputs(4), outputs)
    log.close()
    labels = LocalStore(root, labels_repository(SPEC))
    rows = [{"request_id": "req-1", "row": i, "label": t} for i, t in enumerate(TRUTH)]
    assert commit_labels(labels, SPEC, rows)
    return store


def _windows(store) -> tuple[pd.DataFrame, pd.DataFrame]:
    return current_window(store, SPEC, "1", 100), labelled_window(store, SPEC, "1", 100)


def test_the_windows_read_the_class_and_each_probability(logged):
    current, labelled = _windows(logged)
    assert current["prediction"].tolist() == [a for a, _ in ANSWERS]
    for team in TEAMS:
        assert current[f"probability_{team}"].tolist() == [p[team] for _, p in ANSWERS]
    assert current["channel"].tolist() == _inputs(4)["channel"]
    assert labelled["label"].tolist() == TRUTH
    assert labelled["probability"].tolist() == [p for _, p in ANSWERS]
    # live performance scores the logged answers: 3 of 4 right
    accuracy = SPEC.model_copy(
        update={"evaluation": SPEC.evaluation.model_copy(update={"metric": "accuracy"})}
    )
    judged = assess_window(accuracy, labelled, 0.75, "1", 1, 0.03)
    assert judged.live == pytest.approx(0.75) and judged.rows == 4


def test_compaction_keeps_the_multiclass_answers_exactly(logged):
    before = _windows(logged)
    result = upkeep(logged, SPEC.name, dt.date(2100, 1, 1), retention_days=30)
    assert result.compacted_rows == 4
    after = _windows(logged)
    for old, new in zip(before, after, strict=True):
        pd.testing.assert_frame_equal(old, new)
