"""The versioned-store interface shared by the local and lakeFS backends."""

from __future__ import annotations

import abc
import builtins
import re
from dataclasses import dataclass, field

BRANCH_NAME = re.compile(r"^\w[-\w]*$")


class StoreError(Exception):
    """Base error of the versioned store; the message says what to do."""


class NotFound(StoreError):
    """A repository, branch, tag, commit or object does not exist."""


class MergeConflict(StoreError):
    """Both sides changed the same path, or the destination has uncommitted changes."""


class NothingToCommit(StoreError):
    """A commit or merge was asked for but there are no changes."""


class StoreUnavailable(StoreError):
    """The store's server cannot be reached."""


class StoreAuthError(StoreError):
    """The store's server refused the credentials."""


@dataclass(frozen=True)
class Commit:
    """A commit: its id is the data version of everything read at it."""

    id: str
    parents: tuple[str, ...]
    message: str
    committer: str
    creation_date: int
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """One path that differs between two refs: ``added``, ``removed`` or ``changed``."""

    path: str
    type: str


def check_branch_name(name: str) -> None:
    if not BRANCH_NAME.match(name):
        raise StoreError(
            f"invalid branch name {name!r}: use letters, digits, '_' and '-', "
            "starting with a letter, digit or '_'"
        )


def check_path(path: str) -> None:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(
            f"invalid object path {path!r}: use a relative path like 'churn/batches/day-001.csv'"
        )


class VersionedStore(abc.ABC):
    """A repository of objects with branches, commits, merges and tags (lakeFS semantics).

    Refs accepted by read methods: a branch name, a tag or a full commit id. Writes go to a
    branch's staging area and become visible at the branch's commit only after ``commit``.
    """

    repository: str
    default_branch: str = "main"

    @abc.abstractmethod
    def ensure_repository(self) -> None:
        """Create the repository with its default branch if it does not exist."""

    @abc.abstractmethod
    def create_branch(self, name: str, source: str) -> str:
        """Create branch ``name`` at ``source``; return its commit id."""

    @abc.abstractmethod
    def delete_branch(self, name: str) -> None: ...

    @abc.abstractmethod
    def list_branches(self) -> dict[str, str]:
        """Branch name → head commit id."""

    @abc.abstractmethod
    def put(self, branch: str, path: str, data: bytes) -> None:
        """Stage an object on ``branch``."""

    @abc.abstractmethod
    def delete(self, branch: str, path: str) -> None:
        """Stage the removal of an object on ``branch``."""

    @abc.abstractmethod
    def uncommitted(self, branch: str) -> list[Change]: ...

    @abc.abstractmethod
    def commit(self, branch: str, message: str, metadata: dict[str, str] | None = None) -> Commit:
        """Commit the staged changes of ``branch``; raise NothingToCommit if there are none."""

    @abc.abstractmethod
    def get(self, ref: str, path: str) -> bytes:
        """Read an object; on a branch this includes staged changes, as lakeFS does."""

    # From here on the class body's `list` is this method: annotations say builtins.list.
    @abc.abstractmethod
    def list(self, ref: str, prefix: str = "") -> list[str]:
        """Object paths under ``prefix`` at ``ref``, sorted."""

    @abc.abstractmethod
    def get_commit(self, ref: str) -> Commit:
        """The commit a ref points at (a branch's head, a tag's target or the commit itself)."""

    @abc.abstractmethod
    def log(self, ref: str, limit: int = 100) -> builtins.list[Commit]:
        """Commits reachable from ``ref``, newest first."""

    @abc.abstractmethod
    def diff(self, left: str, right: str) -> builtins.list[Change]:
        """Committed changes from ``left`` to ``right``, sorted by path."""

    @abc.abstractmethod
    def merge(
        self,
        source: str,
        destination: str,
        message: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Merge ``source`` into branch ``destination``; return the merge commit id."""

    @abc.abstractmethod
    def create_tag(self, tag: str, ref: str) -> str:
        """Tag ``ref``; return the tagged commit id."""

    def head(self, branch: str) -> str:
        """The commit id at the head of ``branch``."""
        return self.get_commit(branch).id

    def commit_url(self, commit_id: str) -> str | None:
        """A link to the commit in the store's UI, where there is one."""
        return None

    def describe(self) -> str:
        """A short human description, used in error messages and metadata."""
        return f"{type(self).__name__}({self.repository})"
