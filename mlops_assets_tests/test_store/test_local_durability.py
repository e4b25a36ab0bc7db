"""What only the local backend must prove for itself: crash safety and concurrent writers."""

import contextlib
import multiprocessing
import subprocess
import sys
import textwrap

import pytest

from mlops_assets.store import MergeConflict, NothingToCommit
from mlops_assets.store.local import LocalStore


@pytest.fixture
def repo(tmp_path):
    s = LocalStore(tmp_path / "store", "demo")
    s.ensure_repository()
    s.put("main", "a.csv", b"first")
    s.commit("main", "first")
    return s


def test_process_killed_mid_commit_leaves_branch_at_previous_commit(repo):
    before = repo.head("main")
    # A real process dies (os._exit, no cleanup) right when the commit would move the branch:
    # the commit object is already written, the branch ref is not.
    script = textwrap.dedent(
        f"""
        import os
        from mlops_assets.store import local
        real = local._atomic_write
        def dying(path, data):
            if path.parent.name == "branches" and b'"staging": {{}}' in data:
                os._exit(137)
            real(path, data)
        local._atomic_write = dying
        s = local.LocalStore({str(repo.root)!r}, "demo")
        s.put("main", "b.csv", b"second")
        s.commit("main", "second")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == 137, proc.stderr.decode()
    fresh = LocalStore(repo.root, "demo")
    assert fresh.head("main") == before
    assert fresh.list(before) == ["a.csv"]
    # The staged write survived, so the commit can simply be retried.
    assert [c.path for c in fresh.uncommitted("main")] == ["b.csv"]
    retried = fresh.commit("main", "second, retried")
    assert fresh.list(retried.id) == ["a.csv", "b.csv"]


def test_process_killed_mid_blob_write_leaves_no_partial_object(repo):
    before = repo.head("main")
    script = textwrap.dedent(
        f"""
        import os
        from mlops_assets.store import local
        local.os.fsync = lambda fd: os._exit(137)
        s = local.LocalStore({str(repo.root)!r}, "demo")
        s.put("main", "c.csv", b"partial")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == 137, proc.stderr.decode()
    fresh = LocalStore(repo.root, "demo")
    assert fresh.head("main") == before
    assert fresh.uncommitted("main") == []
    assert fresh.list("main") == ["a.csv"]


def _writer(root: str, worker: int, n: int) -> None:
    s = LocalStore(root, "demo")
    for i in range(n):
        s.put("main", f"w{worker}/{i}.csv", f"{worker},{i}".encode())
        # As in lakeFS, staging is per branch: another writer may have committed our object.
        with contextlib.suppress(NothingToCommit):
            s.commit("main", f"worker {worker} item {i}", {"worker": str(worker)})


def test_concurrent_writers_never_lose_an_update(repo):
    workers, per_worker = 4, 10
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_writer, args=(str(repo.root), w, per_worker)) for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    paths = repo.list("main")
    assert len(paths) == 1 + workers * per_worker
    # Every commit made is on the history of main: no racing writer moved the branch back.
    history = repo.log("main", limit=1000)
    assert all(len(c.parents) == 1 for c in history[:-1])
    committed = set()
    for c in history[:-1]:
        committed |= {x.path for x in repo.diff(c.parents[0], c.id)}
    assert committed == set(paths)
    for w in range(workers):
        for i in range(per_worker):
            assert repo.get("main", f"w{w}/{i}.csv") == f"{w},{i}".encode()


def test_merge_into_a_dirty_branch_is_refused(repo):
    repo.create_branch("side", "main")
    repo.put("side", "s.csv", b"s")
    repo.commit("side", "side")
    head = repo.head("main")
    repo.put("main", "staged.csv", b"x")
    with pytest.raises(MergeConflict, match="uncommitted changes"):
        repo.merge("side", "main")
    assert repo.head("main") == head
