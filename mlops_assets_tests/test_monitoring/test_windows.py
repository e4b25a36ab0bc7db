"""The windows monitoring reads from the committed prediction log: the newest rows of the
serving version (drift), and those whose label arrived (live performance)."""

from mlops_assets.monitoring.drift import PREDICTION
from mlops_assets.monitoring.labels import commit_labels, labels_repository
from mlops_assets.monitoring.windows import current_window, labelled_window, served_rows
from mlops_assets.serving.predlog import PredictionLog, store_committer
from mlops_assets.specs.model import get_spec
from mlops_assets.store.local import LocalStore

SPEC = get_spec("churn")
ROW = {
    "tenure_months": 3.0,
    "monthly_charges": 80.0,
    "support_tickets": 2.0,
    "usage_hours": None,
    "plan": "basic",
    "region": "north",
}


def _log(tmp_path, requests):
    store = LocalStore(tmp_path / "store", labels_repository(SPEC))
    log = PredictionLog(
        tmp_path / "log", commit=store_committer(lambda _: store, {SPEC.name: store.repository})
    )
    for request_id, version, n in requests:
        columns = {c: [ROW[c]] * n for c in SPEC.features}
        outputs = {"prediction": [1] * n, "probability": [0.25 + i / 100 for i in range(n)]}
        log.append(SPEC.name, version, request_id, columns, outputs)
    log.close()
    return store


def test_an_empty_log_gives_empty_windows(tmp_path):
    store = LocalStore(tmp_path / "store", labels_repository(SPEC))
    store.ensure_repository()
    assert list(served_rows(store, SPEC, "1")) == []
    assert current_window(store, SPEC, "1", 10).empty
    assert labelled_window(store, SPEC, "1", 10).empty


def test_the_current_window_is_the_newest_rows_of_the_serving_version(tmp_path):
    store = _log(tmp_path, [("a", "1", 3), ("b", "2", 4), ("c", "1", 2)])
    window = current_window(store, SPEC, "1", 4)
    # newest 4 rows of version 1, oldest first: the last of request a, then all of c
    assert len(window) == 4
    assert window[PREDICTION].tolist() == [0.26, 0.27, 0.25, 0.26]
    assert set(window.columns) == {*SPEC.features, PREDICTION, "timestamp"}
    assert window["timestamp"].is_monotonic_increasing
    assert len(current_window(store, SPEC, "2", 100)) == 4


def test_the_labelled_window_joins_labels_by_request_and_row(tmp_path):
    store = _log(tmp_path, [("a", "1", 3), ("b", "1", 2)])
    commit_labels(
        store,
        SPEC,
        [
            {"request_id": "a", "row": 2, "label": 0},
            {"request_id": "b", "row": 0, "label": 1},
            {"request_id": "zzz", "row": 0, "label": 1},  # a label for nothing served
        ],
    )
    window = labelled_window(store, SPEC, "1", 10)
    assert window["label"].tolist() == [0, 1]
    assert window["probability"].tolist() == [0.27, 0.25]
    assert labelled_window(store, SPEC, "2", 10).empty
