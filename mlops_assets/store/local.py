"""The embedded backend: lakeFS semantics on local disk, no server.

Layout of ``<root>/<repository>/``::

    objects/<sha256>          immutable, content-addressed blobs
    commits/<commit-id>.json  parents, message, metadata and the full tree (path -> blob)
    branches/<name>.json      head commit id and the staging area (path -> blob or null)
    tags/<name>               the tagged commit id
    .lock                     flock taken by every writer

Crash safety: every file is written to a temporary name, fsynced and renamed into place.
A commit writes its commit file first and moves the branch last, so a crash at any point
leaves the branch at its previous commit with its staging area intact. Writers serialise on
an exclusive ``flock`` around each read-modify-write of a branch, so concurrent writers
(threads or processes) never lose an update.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import getpass
import hashlib
import heapq
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from mlops_assets.store.base import (
    Change,
    Commit,
    MergeConflict,
    NotFound,
    NothingToCommit,
    StoreError,
    VersionedStore,
    check_branch_name,
    check_path,
)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _dump(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, indent=1).encode()


class LocalStore(VersionedStore):
    """A repository on local disk with the same semantics as a lakeFS repository."""

    def __init__(self, root: str | os.PathLike[str], repository: str, committer: str = "") -> None:
        self.root = Path(root)
        self.repository = repository
        self.path = self.root / repository
        # who commits: the setting MLOPS_COMMITTER (Settings.commit_author), else the OS user
        self.committer = committer or getpass.getuser()

    def describe(self) -> str:
        return f"local store {self.path}"

    # -- plumbing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._require_repo()
        with open(self.path / ".lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _require_repo(self) -> None:
        if not (self.path / "branches").is_dir():
            raise NotFound(
                f"repository {self.repository!r} does not exist in {self.root}: "
                "run `mlops seed` (or ensure_repository()) first"
            )

    def _branch_file(self, name: str) -> Path:
        return self.path / "branches" / f"{name}.json"

    def _read_branch(self, name: str) -> dict:
        try:
            return json.loads(self._branch_file(name).read_bytes())
        except FileNotFoundError:
            raise NotFound(f"branch {name!r} not found in repository {self.repository!r}") from None

    def _write_branch(self, name: str, state: dict) -> None:
        _atomic_write(self._branch_file(name), _dump(state))

    def _read_commit(self, commit_id: str) -> dict:
        if not commit_id:
            return {"id": "", "parents": [], "tree": {}}
        try:
            return json.loads((self.path / "commits" / f"{commit_id}.json").read_bytes())
        except FileNotFoundError:
            raise NotFound(
                f"commit {commit_id!r} not found in repository {self.repository!r}"
            ) from None

    def _resolve(self, ref: str) -> str:
        """Branch, tag or commit id → commit id."""
        plain = bool(ref) and "/" not in ref and ref not in (".", "..")
        if plain and self._branch_file(ref).is_file():
            return self._read_branch(ref)["commit_id"]
        tag = self.path / "tags" / ref
        if plain and tag.is_file():
            return tag.read_text().strip()
        if plain and (self.path / "commits" / f"{ref}.json").is_file():
            return ref
        self._require_repo()
        raise NotFound(
            f"ref {ref!r} not found in repository {self.repository!r}: "
            "use a branch name, a tag or a full commit id"
        )

    def _tree(self, ref: str, with_staging: bool = True) -> dict[str, str]:
        """path → blob id at ``ref``; on a branch, staged changes included."""
        if "/" not in ref and self._branch_file(ref).is_file():
            # One read of the branch file: its commit and staging area belong together.
            state = self._read_branch(ref)
            tree = dict(self._read_commit(state["commit_id"])["tree"])
            if with_staging:
                for path, blob in state["staging"].items():
                    if blob is None:
                        tree.pop(path, None)
                    else:
                        tree[path] = blob
            return tree
        return dict(self._read_commit(self._resolve(ref))["tree"])

    def _store_blob(self, data: bytes) -> str:
        blob = hashlib.sha256(data).hexdigest()
        target = self.path / "objects" / blob
        if not target.exists():
            _atomic_write(target, data)
        return blob

    def _new_commit(
        self, parents: list[str], tree: dict[str, str], message: str, metadata: dict[str, str]
    ) -> Commit:
        created = int(time.time())
        committer = self.committer
        body = {
            "parents": [p for p in parents if p],
            "tree": tree,
            "message": message,
            "metadata": {str(k): str(v) for k, v in (metadata or {}).items()},
            "committer": committer,
            "creation_date": created,
            "nonce": uuid.uuid4().hex,
        }
        commit_id = hashlib.sha256(_dump(body)).hexdigest()
        body["id"] = commit_id
        _atomic_write(self.path / "commits" / f"{commit_id}.json", _dump(body))
        return self._to_commit(body)

    @staticmethod
    def _to_commit(body: dict) -> Commit:
        return Commit(
            id=body["id"],
            parents=tuple(body["parents"]),
            message=body["message"],
            committer=body["committer"],
            creation_date=body["creation_date"],
            metadata=dict(body["metadata"]),
        )

    def _ancestors(self, commit_id: str) -> dict[str, int]:
        """commit id → distance from ``commit_id`` (breadth first)."""
        seen: dict[str, int] = {}
        frontier = [commit_id]
        depth = 0
        while frontier:
            nxt = []
            for c in frontier:
                if c and c not in seen:
                    seen[c] = depth
                    nxt.extend(self._read_commit(c)["parents"])
            frontier = nxt
            depth += 1
        return seen

    def _merge_base(self, src_anc: dict[str, int], dest_anc: dict[str, int]) -> str:
        """A best common ancestor: one that is not an ancestor of another common ancestor."""
        common = [c for c in src_anc if c in dest_anc]
        if not common:
            return ""
        redundant: set[str] = set()
        for c in common:
            for parent in self._read_commit(c)["parents"]:
                if parent not in redundant:
                    redundant.update(self._ancestors(parent))
        best = [c for c in common if c not in redundant] or common
        return min(best, key=lambda c: (src_anc[c] + dest_anc[c], c))

    # -- repository and branches ----------------------------------------------------------
    def ensure_repository(self) -> None:
        if self._branch_file(self.default_branch).exists():
            return
        for sub in ("objects", "commits", "branches", "tags"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        with self._locked():
            if self._branch_file(self.default_branch).exists():
                return
            # lakeFS creates every repository with an initial empty commit.
            first = self._new_commit([], {}, "Repository created", {})
            self._write_branch(self.default_branch, {"commit_id": first.id, "staging": {}})

    def create_branch(self, name: str, source: str) -> str:
        check_branch_name(name)
        with self._locked():
            if self._branch_file(name).exists():
                raise MergeConflict(
                    f"branch {name!r} already exists in repository {self.repository!r}"
                )
            commit_id = self._resolve(source)
            self._write_branch(name, {"commit_id": commit_id, "staging": {}})
            return commit_id

    def delete_branch(self, name: str) -> None:
        if name == self.default_branch:
            raise StoreError(f"refusing to delete the default branch {name!r}")
        with self._locked():
            self._read_branch(name)
            self._branch_file(name).unlink()

    def list_branches(self) -> dict[str, str]:
        self._require_repo()
        return {
            p.stem: json.loads(p.read_bytes())["commit_id"]
            for p in sorted((self.path / "branches").glob("*.json"))
        }

    # -- objects --------------------------------------------------------------------------
    def put(self, branch: str, path: str, data: bytes) -> None:
        check_path(path)
        self._require_repo()
        blob = self._store_blob(data)
        with self._locked():
            state = self._read_branch(branch)
            state["staging"][path] = blob
            self._write_branch(branch, state)

    def delete(self, branch: str, path: str) -> None:
        check_path(path)
        with self._locked():
            if path not in self._tree(branch):
                raise NotFound(f"object {path!r} not found on branch {branch!r}")
            state = self._read_branch(branch)
            state["staging"][path] = None
            self._write_branch(branch, state)

    def get(self, ref: str, path: str) -> bytes:
        blob = self._tree(ref).get(path)
        if blob is None:
            raise NotFound(f"object {path!r} not found at ref {ref!r} of {self.repository!r}")
        return (self.path / "objects" / blob).read_bytes()

    # From here on the class body's `list` is this method: annotations say builtins.list.
    def list(self, ref: str, prefix: str = "") -> list[str]:
        return sorted(p for p in self._tree(ref) if p.startswith(prefix))

    # -- commits --------------------------------------------------------------------------
    def uncommitted(self, branch: str) -> builtins.list[Change]:
        state = self._read_branch(branch)
        base = self._read_commit(state["commit_id"])["tree"]
        changes = []
        for path, blob in sorted(state["staging"].items()):
            if blob is None:
                if path in base:
                    changes.append(Change(path, "removed"))
            elif path not in base:
                changes.append(Change(path, "added"))
            elif base[path] != blob:
                changes.append(Change(path, "changed"))
        return changes

    def commit(self, branch: str, message: str, metadata: dict[str, str] | None = None) -> Commit:
        with self._locked():
            state = self._read_branch(branch)
            if not self.uncommitted(branch):
                raise NothingToCommit(
                    f"branch {branch!r} has no uncommitted changes: put objects before committing"
                )
            tree = self._tree(branch)
            commit = self._new_commit([state["commit_id"]], tree, message, metadata or {})
            # The branch moves last: a crash before this line leaves it where it was.
            self._write_branch(branch, {"commit_id": commit.id, "staging": {}})
            return commit

    def get_commit(self, ref: str) -> Commit:
        return self._to_commit(self._read_commit(self._resolve(ref)))

    def log(self, ref: str, limit: int = 100) -> builtins.list[Commit]:
        ancestors = self._ancestors(self._resolve(ref))
        commits = {c: self._to_commit(self._read_commit(c)) for c in ancestors}
        # Topological, newest first: a commit is listed only after every child of it.
        children = dict.fromkeys(commits, 0)
        for c in commits.values():
            for p in c.parents:
                children[p] += 1
        ready = [
            (-c.creation_date, ancestors[c.id], c.id)
            for c in commits.values()
            if not children[c.id]
        ]
        heapq.heapify(ready)
        ordered: list[Commit] = []
        while ready and len(ordered) < limit:
            _, _, cid = heapq.heappop(ready)
            ordered.append(commits[cid])
            for p in commits[cid].parents:
                children[p] -= 1
                if not children[p]:
                    heapq.heappush(ready, (-commits[p].creation_date, ancestors[p], p))
        return ordered

    def diff(self, left: str, right: str) -> builtins.list[Change]:
        a = self._tree(left, with_staging=False)
        b = self._tree(right, with_staging=False)
        changes = []
        for path in sorted(set(a) | set(b)):
            if path not in b:
                changes.append(Change(path, "removed"))
            elif path not in a:
                changes.append(Change(path, "added"))
            elif a[path] != b[path]:
                changes.append(Change(path, "changed"))
        return changes

    def merge(
        self,
        source: str,
        destination: str,
        message: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str:
        with self._locked():
            dest_state = self._read_branch(destination)
            if self.uncommitted(destination):
                raise MergeConflict(
                    f"branch {destination!r} has uncommitted changes: commit or reset them "
                    "before merging into it"
                )
            src_id = self._resolve(source)
            dest_id = dest_state["commit_id"]
            src_anc = self._ancestors(src_id)
            dest_anc = self._ancestors(dest_id)
            if src_id in dest_anc:
                raise NothingToCommit(
                    f"nothing to merge: {source!r} is already contained in {destination!r}"
                )
            base_id = self._merge_base(src_anc, dest_anc)
            base = self._read_commit(base_id)["tree"]
            src = self._read_commit(src_id)["tree"]
            dest = self._read_commit(dest_id)["tree"]
            merged = dict(dest)
            conflicts = []
            for path in set(base) | set(src) | set(dest):
                b, s, d = base.get(path), src.get(path), dest.get(path)
                if s in (b, d):
                    continue
                if d == b:
                    if s is None:
                        merged.pop(path, None)
                    else:
                        merged[path] = s
                else:
                    conflicts.append(path)
            if conflicts:
                raise MergeConflict(
                    f"merge of {source!r} into {destination!r} conflicts on "
                    f"{', '.join(sorted(conflicts))}: both sides changed these paths"
                )
            commit = self._new_commit(
                [dest_id, src_id],
                merged,
                message or f"Merge '{source}' into '{destination}'",
                metadata or {},
            )
            self._write_branch(destination, {"commit_id": commit.id, "staging": {}})
            return commit.id

    def create_tag(self, tag: str, ref: str) -> str:
        check_branch_name(tag)
        with self._locked():
            target = self.path / "tags" / tag
            if target.exists():
                raise MergeConflict(f"tag {tag!r} already exists in {self.repository!r}")
            commit_id = self._resolve(ref)
            _atomic_write(target, commit_id.encode())
            return commit_id
