"""Delayed labels: delivered beside the prediction log, read back by (request id, row)."""

from mlops_assets.monitoring.labels import commit_labels, labels_repository, read_labels
from mlops_assets.specs.model import get_spec
from mlops_assets.store.local import LocalStore

SPEC = get_spec("churn")


def test_labels_are_read_back_by_request_and_row(tmp_path):
    store = LocalStore(tmp_path, labels_repository(SPEC))
    first = commit_labels(store, SPEC, [{"request_id": "a", "row": 0, "label": 1}])
    second = commit_labels(
        store,
        SPEC,
        [{"request_id": "b", "row": 0, "label": 0}, {"request_id": "b", "row": 1, "label": 1}],
    )
    assert first != second == store.head("main")
    assert read_labels(store, second, SPEC) == {("a", 0): 1, ("b", 0): 0, ("b", 1): 1}
    assert read_labels(store, first, SPEC) == {("a", 0): 1}
    assert commit_labels(store, SPEC, []) is None


def test_labels_survive_the_log_committing_them_first(tmp_path):
    """Staged changes on a branch are shared: the prediction log's committer may take the
    label file into its own commit between our put and our commit."""
    store = LocalStore(tmp_path, labels_repository(SPEC))
    real = store.commit

    def racing(branch, message, metadata=None):
        real(branch, "prediction log: 1 segment(s)")  # the other writer wins the race
        return real(branch, message, metadata)

    store.commit = racing
    head = commit_labels(store, SPEC, [{"request_id": "r", "row": 0, "label": 1}])
    assert head == store.head("main")
    assert read_labels(store, head, SPEC) == {("r", 0): 1}
