"""One contract for every backend: local always, lakeFS over HTTP (fake), live lakeFS if set."""

import pytest

from mlops_assets.store import Change, MergeConflict, NotFound, NothingToCommit, StoreError


def test_new_repository_has_main_with_an_initial_commit(store):
    assert set(store.list_branches()) == {"main"}
    head = store.head("main")
    assert len(head) == 64 and all(ch in "0123456789abcdef" for ch in head)
    assert store.list("main") == []


def test_ensure_repository_is_idempotent(store):
    head = store.head("main")
    store.ensure_repository()
    assert store.head("main") == head


def test_staged_writes_are_visible_on_branch_not_at_commit(store):
    head = store.head("main")
    store.put("main", "a/x.csv", b"1,2\n")
    assert store.get("main", "a/x.csv") == b"1,2\n"
    assert store.uncommitted("main") == [Change("a/x.csv", "added")]
    with pytest.raises(NotFound):
        store.get(head, "a/x.csv")


def test_commit_records_message_metadata_and_parent(store):
    before = store.head("main")
    store.put("main", "a/x.csv", b"x")
    c = store.commit("main", "add x", {"source": "test", "rows": "3"})
    assert c.id != before and store.head("main") == c.id
    assert c.parents == (before,)
    got = store.get_commit(c.id)
    assert (got.message, got.metadata) == ("add x", {"source": "test", "rows": "3"})
    assert store.uncommitted("main") == []
    assert [x.id for x in store.log("main", limit=2)] == [c.id, before]


def test_empty_commit_is_refused(store):
    with pytest.raises(NothingToCommit, match="no uncommitted changes"):
        store.commit("main", "nothing")


def test_read_at_any_ref_is_immutable(store):
    store.put("main", "d.csv", b"v1")
    c1 = store.commit("main", "v1").id
    store.put("main", "d.csv", b"v2")
    c2 = store.commit("main", "v2").id
    store.create_tag("release-1", c1)
    assert store.get(c1, "d.csv") == b"v1"
    assert store.get("release-1", "d.csv") == b"v1"
    assert store.get(c2, "d.csv") == b"v2"
    assert store.get_commit("release-1").id == c1
    assert store.diff(c1, c2) == [Change("d.csv", "changed")]


def test_list_with_prefix_and_delete(store):
    for p in ("b/1.csv", "b/2.csv", "c/3.csv"):
        store.put("main", p, p.encode())
    store.commit("main", "three")
    assert store.list("main", "b/") == ["b/1.csv", "b/2.csv"]
    store.delete("main", "b/1.csv")
    c = store.commit("main", "delete one")
    assert store.list(c.id) == ["b/2.csv", "c/3.csv"]
    assert store.diff(c.parents[0], c.id) == [Change("b/1.csv", "removed")]


def test_branch_isolation_and_merge(store):
    store.put("main", "base.csv", b"base")
    store.commit("main", "base")
    store.create_branch("ingest-1", "main")
    store.put("ingest-1", "new.csv", b"new")
    store.commit("ingest-1", "new batch")
    assert store.list("main") == ["base.csv"]
    assert store.diff("main", "ingest-1") == [Change("new.csv", "added")]
    merged = store.merge("ingest-1", "main", metadata={"audit": "passed"})
    assert store.head("main") == merged
    assert store.list("main") == ["base.csv", "new.csv"]
    assert store.get_commit(merged).metadata == {"audit": "passed"}
    assert set(store.list_branches()) == {"main", "ingest-1"}
    store.delete_branch("ingest-1")
    assert set(store.list_branches()) == {"main"}


def test_merge_of_nothing_is_refused(store):
    store.create_branch("empty", "main")
    with pytest.raises(NothingToCommit):
        store.merge("empty", "main")


def test_merge_conflict_leaves_destination_unchanged(store):
    store.put("main", "f.csv", b"base")
    store.commit("main", "base")
    store.create_branch("other", "main")
    store.put("other", "f.csv", b"theirs")
    store.commit("other", "theirs")
    store.put("main", "f.csv", b"ours")
    head = store.commit("main", "ours").id
    with pytest.raises(MergeConflict):
        store.merge("other", "main")
    assert store.head("main") == head
    assert store.get("main", "f.csv") == b"ours"


def test_unknown_refs_and_objects_raise_not_found(store):
    with pytest.raises(NotFound):
        store.get("main", "missing.csv")
    with pytest.raises(NotFound):
        store.get_commit("no-such-branch")
    with pytest.raises(NotFound):
        store.list("no-such-branch")


def test_branch_creation_twice_is_refused(store):
    store.create_branch("dup", "main")
    with pytest.raises(MergeConflict):
        store.create_branch("dup", "main")


def test_merge_uses_the_best_common_ancestor(store):
    # A side branch cut from an old commit is merged into a feature branch that deleted a
    # file; merging the feature into main must delete the file there too.
    store.create_branch("old", "main")
    store.put("old", "o.csv", b"o")
    store.commit("old", "old work")
    store.put("main", "p.csv", b"v1")
    store.commit("main", "add p")
    store.create_branch("feat", "main")
    store.delete("feat", "p.csv")
    store.commit("feat", "delete p")
    for i in range(3):
        store.put("feat", f"f{i}.csv", b"x")
        store.commit("feat", f"feature {i}")
    store.merge("old", "feat")
    store.put("main", "m.csv", b"y")
    store.commit("main", "main moves on")
    store.merge("feat", "main")
    assert store.list("main") == ["f0.csv", "f1.csv", "f2.csv", "m.csv", "o.csv"]


@pytest.mark.parametrize("ref", ["", ".", "..", "tags", "a/b"])
def test_odd_refs_are_not_found(store, ref):
    with pytest.raises((NotFound, StoreError)):
        store.get_commit(ref)
