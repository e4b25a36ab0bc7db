"""Versioned data store with lakeFS semantics: one interface, two backends.

``local`` keeps repositories on local disk (the embedded default, no server);
``lakefs`` talks to a lakeFS server through the maintained ``lakefs-sdk``.
This package imports no Dagster.
"""

from typing import Any

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
)

__all__ = [
    "Change",
    "Commit",
    "MergeConflict",
    "NotFound",
    "NothingToCommit",
    "StoreAuthError",
    "StoreError",
    "StoreUnavailable",
    "VersionedStore",
    "open_store",
]


def open_store(backend: str, repository: str, **options: Any) -> VersionedStore:
    """Open the store for ``backend`` ('local' or 'lakefs').

    Options: ``root`` and optionally ``committer`` for local; ``endpoint``,
    ``access_key_id``, ``secret_access_key`` and optionally ``storage_namespace`` and
    ``timeout_seconds`` (a number) for lakefs.
    """
    if backend == "local":
        from mlops_assets.store.local import LocalStore

        return LocalStore(options["root"], repository, options.get("committer", ""))
    if backend == "lakefs":
        from mlops_assets.store.lakefs import LakeFSStore

        return LakeFSStore(repository=repository, **options)
    raise StoreError(
        f"unknown data backend {backend!r}: "
        "set MLOPS_DATA_BACKEND to 'local' (embedded) or 'lakefs'"
    )
