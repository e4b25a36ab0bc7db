"""The production backend: a lakeFS server through the maintained ``lakefs-sdk``.

``lakefs-client`` is deprecated and frozen at 1.44.0; ``lakefs-sdk`` is the generated client
that lakeFS releases with every server version (the high-level ``lakefs`` package wraps it).
We call the generated API directly so that every request is one documented endpoint, which
is also what the contract tests check against the SDK's own models.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from mlops_assets.store.base import (
    Change,
    Commit,
    MergeConflict,
    NotFound,
    NothingToCommit,
    StoreAuthError,
    StoreError,
    StoreUnavailable,
    VersionedStore,
    check_branch_name,
    check_path,
)

T = TypeVar("T")
_PAGE = 1000
_CHANGE_TYPES = {
    "added": "added",
    "removed": "removed",
    "changed": "changed",
    "conflict": "changed",
}


class LakeFSStore(VersionedStore):
    """A lakeFS repository; endpoint and keys come from the caller (``dg.EnvVar`` upstream)."""

    def __init__(
        self,
        repository: str,
        endpoint: str,
        access_key_id: str,
        secret_access_key: str,
        storage_namespace: str = "",
        timeout_seconds: float = 10.0,
    ) -> None:
        import lakefs_sdk

        self.repository = repository
        self.endpoint = endpoint.rstrip("/")
        if self.endpoint.endswith("/api/v1"):
            self.endpoint = self.endpoint[: -len("/api/v1")]
        self.storage_namespace = storage_namespace
        self.timeout = timeout_seconds
        config = lakefs_sdk.Configuration(
            host=f"{self.endpoint}/api/v1", username=access_key_id, password=secret_access_key
        )
        # Fail fast on a dead endpoint: the caller reports it, Dagster's retry policy retries.
        # The generated Configuration initialises retries to None, so its inferred type is None;
        # the REST client hands it to urllib3, which takes an int.
        config.retries = 1  # type: ignore[assignment]
        client = lakefs_sdk.ApiClient(config)
        self._repos = lakefs_sdk.RepositoriesApi(client)
        self._branches = lakefs_sdk.BranchesApi(client)
        self._commits = lakefs_sdk.CommitsApi(client)
        self._objects = lakefs_sdk.ObjectsApi(client)
        self._refs = lakefs_sdk.RefsApi(client)
        self._tags = lakefs_sdk.TagsApi(client)
        self._sdk = lakefs_sdk

    def describe(self) -> str:
        return f"lakeFS {self.endpoint} repository {self.repository!r}"

    def commit_url(self, commit_id: str) -> str | None:
        return f"{self.endpoint}/repositories/{self.repository}/commits/{commit_id}"

    # -- error translation ----------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        exc = self._sdk.exceptions
        kwargs.setdefault("_request_timeout", self.timeout)
        try:
            return fn(*args, **kwargs)
        except (exc.UnauthorizedException, exc.ForbiddenException) as e:
            raise StoreAuthError(
                f"lakeFS at {self.endpoint} refused the credentials while trying to {what} "
                f"(HTTP {e.status}): check LAKEFS_ACCESS_KEY_ID and LAKEFS_SECRET_ACCESS_KEY"
            ) from None
        except exc.NotFoundException:
            raise NotFound(f"lakeFS {self.repository!r}: cannot {what}: not found") from None
        except exc.ApiException as e:
            body = _error_message(e)
            if e.status == 409:
                raise MergeConflict(f"lakeFS {self.repository!r}: cannot {what}: {body}") from None
            if e.status == 400 and ("dirty" in body.lower() or "uncommitted" in body.lower()):
                raise MergeConflict(
                    f"lakeFS {self.repository!r}: cannot {what}: {body}: commit or reset the "
                    "destination's uncommitted changes first"
                ) from None
            if e.status == 400 and "no changes" in body.lower():
                raise NothingToCommit(
                    f"lakeFS {self.repository!r}: cannot {what}: {body}"
                ) from None
            raise StoreError(
                f"lakeFS at {self.endpoint}: cannot {what}: HTTP {e.status}: {body}"
            ) from None
        except Exception as e:  # urllib3 connection errors have no common public base
            if _is_connection_error(e):
                raise StoreUnavailable(
                    f"lakeFS at {self.endpoint} is unreachable while trying to {what} "
                    f"({type(e).__name__}): start the server or set LAKEFS_ENDPOINT to its URL"
                ) from None
            raise

    def _pages(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator:
        after = ""
        while True:
            page = self._call(what, fn, *args, after=after, amount=_PAGE, **kwargs)
            yield from page.results
            if not page.pagination.has_more:
                return
            after = page.pagination.next_offset

    # -- repository and branches ----------------------------------------------------------
    def ensure_repository(self) -> None:
        exc = self._sdk.exceptions
        try:
            self._repos.get_repository(self.repository, _request_timeout=self.timeout)
            return
        except exc.NotFoundException:
            pass
        except Exception:
            # Let _call translate auth and connection errors.
            self._call("read the repository", self._repos.get_repository, self.repository)
        if not self.storage_namespace:
            raise StoreError(
                f"lakeFS repository {self.repository!r} does not exist and no storage namespace "
                "is configured: set LAKEFS_STORAGE_NAMESPACE (e.g. s3://bucket/mlops) or "
                "create the repository in lakeFS"
            )
        self._call(
            "create the repository",
            self._repos.create_repository,
            self._sdk.RepositoryCreation(
                name=self.repository,
                # One namespace base serves many repositories: each gets its own folder.
                storage_namespace=f"{self.storage_namespace.rstrip('/')}/{self.repository}",
                default_branch=self.default_branch,
            ),
        )

    def create_branch(self, name: str, source: str) -> str:
        check_branch_name(name)
        created = self._call(
            f"create branch {name!r}",
            self._branches.create_branch,
            self.repository,
            self._sdk.BranchCreation(name=name, source=source),
        )
        # lakeFS answers with the new branch's commit id; fall back to reading it.
        created = str(created or "").strip().strip('"')
        return created if re.fullmatch(r"[0-9a-f]{64}", created) else self.head(name)

    def delete_branch(self, name: str) -> None:
        if name == self.default_branch:
            raise StoreError(f"refusing to delete the default branch {name!r}")
        self._call(f"delete branch {name!r}", self._branches.delete_branch, self.repository, name)

    def list_branches(self) -> dict[str, str]:
        refs = self._pages("list branches", self._branches.list_branches, self.repository)
        return {r.id: r.commit_id for r in refs}

    # -- objects --------------------------------------------------------------------------
    def put(self, branch: str, path: str, data: bytes) -> None:
        check_path(path)
        # The generated client uploads multipart from a file path (it opens the path itself).
        with tempfile.TemporaryDirectory(prefix="mlops-upload-") as tmp:
            staged = os.path.join(tmp, os.path.basename(path))
            with open(staged, "wb") as f:
                f.write(data)
            self._call(
                f"upload {path!r} to branch {branch!r}",
                self._objects.upload_object,
                self.repository,
                branch,
                path,
                content=staged,
            )

    def delete(self, branch: str, path: str) -> None:
        check_path(path)
        self._call(
            f"delete {path!r} on branch {branch!r}",
            self._objects.delete_object,
            self.repository,
            branch,
            path,
        )

    def get(self, ref: str, path: str) -> bytes:
        return bytes(
            self._call(
                f"read {path!r} at {ref!r}", self._objects.get_object, self.repository, ref, path
            )
        )

    # From here on the class body's `list` is this method: annotations say builtins.list.
    def list(self, ref: str, prefix: str = "") -> list[str]:
        stats = self._pages(
            f"list objects at {ref!r}",
            self._objects.list_objects,
            self.repository,
            ref,
            prefix=prefix,
        )
        return sorted(s.path for s in stats if s.path_type == "object")

    # -- commits --------------------------------------------------------------------------
    def uncommitted(self, branch: str) -> builtins.list[Change]:
        diffs = self._pages(
            f"diff branch {branch!r}", self._branches.diff_branch, self.repository, branch
        )
        return sorted((_change(d) for d in diffs), key=lambda c: c.path)

    def commit(self, branch: str, message: str, metadata: dict[str, str] | None = None) -> Commit:
        # lakeFS rejects an empty commit with 400 "commit: no changes"; map it the same way
        # as the local backend by checking first (cheap, and the message is clearer).
        if not self.uncommitted(branch):
            raise NothingToCommit(
                f"branch {branch!r} has no uncommitted changes: put objects before committing"
            )
        commit = self._call(
            f"commit branch {branch!r}",
            self._commits.commit,
            self.repository,
            branch,
            self._sdk.CommitCreation(
                message=message, metadata={k: str(v) for k, v in (metadata or {}).items()}
            ),
        )
        return _commit(commit)

    def get_commit(self, ref: str) -> Commit:
        # Resolve branch/tag/commit with a one-entry log, the documented way to read a ref.
        commits = self._call(
            f"resolve ref {ref!r}", self._refs.log_commits, self.repository, ref, amount=1
        ).results
        if not commits:
            raise NotFound(f"lakeFS {self.repository!r}: ref {ref!r} has no commits")
        return _commit(commits[0])

    def log(self, ref: str, limit: int = 100) -> builtins.list[Commit]:
        page = self._call(
            f"log {ref!r}", self._refs.log_commits, self.repository, ref, amount=min(limit, _PAGE)
        )
        return [_commit(c) for c in page.results][:limit]

    def diff(self, left: str, right: str) -> builtins.list[Change]:
        # two_dot compares the two trees directly, as the local backend does (three_dot would
        # compare from the merge base).
        diffs = self._pages(
            f"diff {left!r}..{right!r}",
            self._refs.diff_refs,
            self.repository,
            left,
            right,
            type="two_dot",
        )
        return sorted((_change(d) for d in diffs), key=lambda c: c.path)

    def merge(
        self,
        source: str,
        destination: str,
        message: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str:
        result = self._call(
            f"merge {source!r} into {destination!r}",
            self._refs.merge_into_branch,
            self.repository,
            source,
            destination,
            merge=self._sdk.Merge(
                message=message or f"Merge '{source}' into '{destination}'",
                metadata={k: str(v) for k, v in (metadata or {}).items()},
            ),
        )
        return result.reference

    def create_tag(self, tag: str, ref: str) -> str:
        check_branch_name(tag)
        created = self._call(
            f"create tag {tag!r}",
            self._tags.create_tag,
            self.repository,
            self._sdk.TagCreation(id=tag, ref=ref),
        )
        return created.commit_id


def _commit(c: Any) -> Commit:
    return Commit(
        id=c.id,
        parents=tuple(c.parents),
        message=c.message,
        committer=c.committer,
        creation_date=c.creation_date,
        metadata=dict(c.metadata or {}),
    )


def _change(d: Any) -> Change:
    return Change(path=d.path, type=_CHANGE_TYPES.get(d.type, d.type))


def _error_message(e: Exception) -> str:
    import json

    body = getattr(e, "body", None) or ""
    with contextlib.suppress(ValueError, TypeError):
        return json.loads(body).get("message", body)
    return str(body) or str(getattr(e, "reason", e))


def _is_connection_error(e: BaseException) -> bool:
    import urllib3.exceptions

    return isinstance(
        e, (urllib3.exceptions.MaxRetryError, urllib3.exceptions.HTTPError, ConnectionError)
    )
