"""The local store's content-addressed trees: a commit costs what it changes, old repositories
keep working, and a crash while tree nodes are written loses nothing."""

import contextlib
import hashlib
import json
import random
import subprocess
import sys
import textwrap
import threading

import pytest

from mlops_assets.store import Change, MergeConflict, NotFound, NothingToCommit, StoreError
from mlops_assets.store import trees as tree_nodes
from mlops_assets.store.local import LocalStore


@pytest.fixture
def repo(tmp_path):
    s = LocalStore(tmp_path / "store", "demo")
    s.ensure_repository()
    return s


def _commit_file(s: LocalStore, commit_id: str) -> dict:
    return json.loads((s.path / "commits" / f"{commit_id}.json").read_bytes())


def _tree_files(s: LocalStore) -> set[str]:
    return {p.name for p in (s.path / "trees").iterdir() if not p.name.startswith(".")}


def test_random_histories_read_as_a_plain_dict_would(repo):
    # A seeded random walk of puts, deletes and commits, big directories (split into buckets
    # and collapsed back) and an object beside a directory of the same name ('a' and 'a/x'),
    # checked against a dict after every commit: get, list with prefixes, diff, uncommitted.
    rng = random.Random(16)
    names = [f"d{d}/f{i}.csv" for d in range(3) for i in range(60)]
    names += ["a", "a/x", "a/y/z", "top.csv", "d0/deep/er/most.csv"]
    model: dict[str, bytes] = {}
    snapshots: list[tuple[str, dict[str, bytes]]] = []
    for step in range(30):
        staged = dict(model)
        for _ in range(rng.randint(1, 20)):
            path = rng.choice(names)
            if path in staged and rng.random() < 0.4:
                repo.delete("main", path)
                del staged[path]
            else:
                data = f"{path} {step} {rng.random()}".encode()
                repo.put("main", path, data)
                staged[path] = data
        assert repo.list("main") == sorted(staged)  # staged writes visible on the branch
        expected = {
            Change(p, "added" if p not in model else "removed" if p not in staged else "changed")
            for p in set(model) | set(staged)
            if model.get(p) != staged.get(p)
        }
        assert set(repo.uncommitted("main")) == expected
        if not expected:
            continue
        c = repo.commit("main", f"step {step}")
        previous = snapshots[-1] if snapshots else None
        model = staged
        snapshots.append((c.id, dict(model)))
        assert repo.list(c.id) == sorted(model)
        for prefix in ("d0/", "d1/f1", "a", "a/", "d0/deep/", "nothing/", "d"):
            assert repo.list(c.id, prefix) == sorted(p for p in model if p.startswith(prefix))
        for path in rng.sample(sorted(model), min(5, len(model))):
            assert repo.get(c.id, path) == model[path]
        if previous is not None:
            old_id, old = previous
            assert [(x.path, x.type) for x in repo.diff(old_id, c.id)] == sorted(
                (p, "added" if p not in old else "removed" if p not in model else "changed")
                for p in set(old) | set(model)
                if old.get(p) != model.get(p)
            )
    # Every snapshot still reads as it was.
    for commit_id, snapshot in snapshots:
        assert repo.list(commit_id) == sorted(snapshot)


def test_equal_trees_have_equal_roots_however_they_were_built(repo):
    paths = [f"big/{i:03d}.csv" for i in range(100)] + ["small/one.csv"]
    for p in paths:
        repo.put("main", p, b"same")
    one = repo.commit("main", "in order")
    repo.create_branch("other", one.parents[0])
    for p in reversed(paths):
        repo.put("other", p, b"same")
    repo.put("other", "extra.csv", b"x")
    repo.commit("other", "reversed plus one")
    repo.delete("other", "extra.csv")
    two = repo.commit("other", "minus the extra one")
    assert _commit_file(repo, one.id)["root"] == _commit_file(repo, two.id)["root"]
    assert repo.diff(one.id, two.id) == []


def test_a_commit_writes_only_the_nodes_on_its_changed_path(repo):
    # A prediction-log-like history: one new segment a commit in a directory that keeps
    # them all. What one commit adds must not grow with what is already there.
    def add(i: int) -> tuple[int, int]:
        before = _tree_files(repo)
        repo.put("main", f"predictions/churn/20261201/segment-{i:05d}.jsonl", b"{}\n")
        c = repo.commit("main", f"segment {i}")
        new = _tree_files(repo) - before
        written = sum((repo.path / "trees" / n).stat().st_size for n in new)
        record = (repo.path / "commits" / f"{c.id}.json").stat().st_size
        return len(new), written + record

    early = [add(i) for i in range(20)]
    for i in range(20, 420):  # staged together: the test is about the commits after it
        repo.put("main", f"predictions/churn/20261201/segment-{i:05d}.jsonl", b"{}\n")
    repo.commit("main", "400 more")
    late = [add(i) for i in range(420, 440)]
    # 4 directories on the path (root, predictions, churn, the day), the day split in two
    # levels of buckets: at most 6 nodes, each at most 16 entries.
    assert max(n for n, _ in late) <= 6
    assert max(b for _, b in late) <= 8000
    assert max(b for _, b in late) <= 4 * max(b for _, b in early)
    # The branch file holds the head and the staging area only.
    assert (repo.path / "branches" / "main.json").stat().st_size < 200


def test_log_reads_commit_records_only_and_stops_at_its_limit(repo):
    ids = []
    for i in range(30):
        repo.put("main", f"f{i}.csv", b"x")
        ids.append(repo.commit("main", f"c{i}").id)
    # Without any tree node, and without the older half of the history, log still answers.
    for p in (repo.path / "trees").iterdir():
        p.unlink()
    for old in ids[:15]:
        (repo.path / "commits" / f"{old}.json").unlink()
    assert [c.id for c in repo.log("main", limit=10)] == ids[::-1][:10]
    with pytest.raises(StoreError, match=r"is damaged: tree node .* restore"):
        repo.list("main")


def test_log_of_merged_branches_is_topological(repo):
    repo.put("main", "base.csv", b"b")
    base = repo.commit("main", "base").id
    repo.create_branch("side", "main")
    side = []
    for i in range(3):
        repo.put("side", f"s{i}.csv", b"s")
        side.append(repo.commit("side", f"side {i}").id)
    repo.put("main", "m.csv", b"m")
    main_one = repo.commit("main", "main moves").id
    merged = repo.merge("side", "main")
    log = [c.id for c in repo.log("main")]
    assert log[0] == merged
    assert set(log) == {merged, main_one, *side, base, repo.get_commit(base).parents[0]}
    position = {c: i for i, c in enumerate(log)}
    for c in repo.log("main"):
        assert all(position[c.id] < position[p] for p in c.parents)


# -- repositories written before trees existed ------------------------------------------
def _old_repository(root, blobs: dict[str, bytes]) -> dict[str, str]:
    """A repository in the old layout, written by hand: commit files with the full tree."""
    path = root / "demo"
    for sub in ("objects", "commits", "branches", "tags"):
        (path / sub).mkdir(parents=True)
    ids: dict[str, str] = {}

    def blob(data: bytes) -> str:
        h = hashlib.sha256(data).hexdigest()
        (path / "objects" / h).write_bytes(data)
        return h

    def commit(name: str, parents: list[str], tree: dict[str, str], created: int) -> str:
        body = {
            "parents": parents,
            "tree": tree,
            "message": name,
            "metadata": {"old": "yes"},
            "committer": "someone",
            "creation_date": created,
            "nonce": name,
        }
        body["id"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        (path / "commits" / f"{body['id']}.json").write_text(
            json.dumps(body, sort_keys=True, indent=1)
        )
        ids[name] = body["id"]
        return body["id"]

    first = commit("created", [], {}, 1_700_000_000)
    tree = {p: blob(d) for p, d in blobs.items()}
    second = commit("data", [first], tree, 1_700_000_100)
    (path / "branches" / "main.json").write_text(
        json.dumps({"commit_id": second, "staging": {"staged.csv": blob(b"staged")}})
    )
    (path / "tags" / "v1").write_text(second)
    return ids


OLD = {f"batches/day-{i:03d}.csv": f"day {i}".encode() for i in range(40)} | {"a.csv": b"a"}


def test_an_old_repository_reads_as_before(tmp_path):
    ids = _old_repository(tmp_path, OLD)
    s = LocalStore(tmp_path, "demo")
    assert s.get("v1", "batches/day-007.csv") == b"day 7"
    assert s.list(ids["data"], "batches/day-00") == [f"batches/day-00{i}.csv" for i in range(10)]
    assert s.list("main") == sorted([*OLD, "staged.csv"])
    assert s.uncommitted("main") == [Change("staged.csv", "added")]
    assert s.diff(ids["created"], "v1") == [Change(p, "added") for p in sorted(OLD)]
    assert [c.message for c in s.log("main")] == ["data", "created"]
    assert s.get_commit("v1").metadata == {"old": "yes"}
    assert not (s.path / "trees").exists()  # reading writes nothing


def test_new_commits_on_an_old_repository_use_trees_and_keep_history(tmp_path):
    ids = _old_repository(tmp_path, OLD)
    s = LocalStore(tmp_path, "demo")
    s.delete("main", "a.csv")
    c = s.commit("main", "first commit in the new layout")
    body = _commit_file(s, c.id)
    assert "tree" not in body and body["root"] and body["generation"] == 3
    assert s.diff(ids["data"], c.id) == [Change("a.csv", "removed"), Change("staged.csv", "added")]
    # A fresh process sees the migrated tree on disk (nothing kept only in memory).
    fresh = LocalStore(tmp_path, "demo")
    assert fresh.list("main") == sorted([*(p for p in OLD if p != "a.csv"), "staged.csv"])
    assert fresh.get("main", "batches/day-039.csv") == b"day 39"
    assert fresh.get("v1", "a.csv") == b"a"  # the old commit is unchanged
    assert [x.message for x in fresh.log("main")] == [
        "first commit in the new layout",
        "data",
        "created",
    ]
    # Branch from the old commit, merge across the two layouts, conflicts still detected.
    fresh.create_branch("fix", "v1")
    fresh.put("fix", "batches/day-000.csv", b"fixed")
    fresh.commit("fix", "fix day 0")
    merged = fresh.merge("fix", "main")
    assert fresh.get(merged, "batches/day-000.csv") == b"fixed"
    assert fresh.list(merged, "a.csv") == []
    fresh.create_branch("clash", "v1")
    fresh.put("clash", "batches/day-000.csv", b"other")
    fresh.commit("clash", "clash")
    with pytest.raises(MergeConflict, match="day-000"):
        fresh.merge("clash", "main")


# -- crash safety -------------------------------------------------------------------------
def test_process_killed_while_writing_tree_nodes_leaves_branch_and_staging(repo):
    for i in range(40):
        repo.put("main", f"dir/{i}.csv", str(i).encode())
    before = repo.commit("main", "forty").id
    # A real process dies (os._exit) as soon as the first new tree node is renamed into
    # place: the branch is never moved (the commit record may or may not be written).
    script = textwrap.dedent(
        f"""
        import os
        from mlops_assets.store import local
        real = local.os.replace
        def dying(src, dst):
            real(src, dst)
            if "/trees/" in str(dst):
                os._exit(137)
        local.os.replace = dying
        s = local.LocalStore({str(repo.root)!r}, "demo")
        s.put("main", "dir/new.csv", b"new")
        s.commit("main", "one more")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == 137, proc.stderr.decode()
    fresh = LocalStore(repo.root, "demo")
    assert fresh.head("main") == before
    assert fresh.uncommitted("main") == [Change("dir/new.csv", "added")]
    assert [c.message for c in fresh.log("main")] == ["forty", "Repository created"]
    retried = fresh.commit("main", "one more, retried")
    assert fresh.get(retried.id, "dir/new.csv") == b"new"
    assert len(fresh.list(retried.id, "dir/")) == 41
    # Every node in place is whole: its name is the sha256 of its bytes (temporary files of
    # the dead process may remain under dot names, as for any interrupted write).
    for node in (fresh.path / "trees").iterdir():
        if not node.name.startswith("."):
            assert hashlib.sha256(node.read_bytes()).hexdigest() == node.name


def test_missing_object_names_the_path(repo):
    repo.put("main", "x/y.csv", b"1")
    repo.commit("main", "one")
    with pytest.raises(NotFound, match=r"'x/z\.csv' not found"):
        repo.get("main", "x/z.csv")
    with pytest.raises(NotFound, match="'x' not found"):
        repo.get("main", "x")


def test_split_directories_stay_within_the_leaf_limit(repo):
    for i in range(300):
        repo.put("main", f"many/{i}.csv", b"x")
    repo.commit("main", "300")
    for name in _tree_files(repo):
        node = json.loads((repo.path / "trees" / name).read_bytes())
        assert len(node.get("entries", node.get("buckets"))) <= max(tree_nodes.LEAF_MAX, 16)
    for i in range(290):
        repo.delete("main", f"many/{i}.csv")
    c = repo.commit("main", "10 left")
    assert repo.list(c.id) == sorted(f"many/{i}.csv" for i in range(290, 300))
    # Ten entries are one leaf again, byte for byte the tree a fresh repository would build.
    other = LocalStore(repo.root, "other")
    other.ensure_repository()
    for i in range(290, 300):
        other.put("main", f"many/{i}.csv", b"x")
    assert (
        _commit_file(other, other.commit("main", "ten").id)["root"]
        == (_commit_file(repo, c.id)["root"])
    )


def test_threads_sharing_one_store_commit_and_read_consistently(tmp_path):
    # Real threads on one store object, on top of an old-format history: writers commit,
    # a reader lists at each head it sees and must find every tree it reads complete.
    _old_repository(tmp_path, OLD)
    s = LocalStore(tmp_path, "demo")
    errors: list[BaseException] = []
    seen_sizes: list[int] = []
    done = threading.Event()

    def writer(w: int) -> None:
        try:
            for i in range(8):
                s.put("main", f"t{w}/{i}.csv", f"{w},{i}".encode())
                with contextlib.suppress(NothingToCommit):
                    s.commit("main", f"thread {w} item {i}")
        except BaseException as e:  # reported below, with the thread that raised it
            errors.append(e)

    def reader() -> None:
        try:
            while not done.is_set():
                head = s.head("main")
                seen_sizes.append(len(s.list(head)))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    watcher.join(120)
    assert errors == []
    expected = {*OLD, "staged.csv", *(f"t{w}/{i}.csv" for w in range(3) for i in range(8))}
    assert s.list("main") == sorted(expected)
    assert LocalStore(tmp_path, "demo").list("main") == sorted(expected)  # all on disk
    assert seen_sizes and min(seen_sizes) >= len(OLD)
