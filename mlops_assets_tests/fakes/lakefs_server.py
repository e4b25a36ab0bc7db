"""An HTTP stand-in for a lakeFS server, for contract tests of the lakeFS adapter.

A lakeFS server (a Go binary) cannot be installed on these machines. This fake speaks the
lakeFS REST API over real HTTP: every request body is parsed with the ``lakefs_sdk`` model the
API declares for it (strict pydantic models, so a wrong field or type is a 400 here and a test
failure), and every response is built from the SDK model the client will deserialize. Storage
semantics come from the real ``LocalStore``, so what the fake can show is also shown by the
contract suite against ``local`` directly; the fake only proves the adapter speaks the API.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from lakefs_sdk import models

from mlops_assets.store import local
from mlops_assets.store.base import (
    MergeConflict,
    NotFound,
    NothingToCommit,
    StoreError,
)

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
Q = r"([^/]+)"


class FakeLakeFS:
    """A running fake server; ``url`` is its endpoint. ``requests`` logs (method, route)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str]] = []
        self.stores: dict[str, local.LocalStore] = {}
        self.namespaces: dict[str, str] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeLakeFS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def store(self, repo: str) -> local.LocalStore:
        if repo not in self.stores:
            raise NotFound(f"repository {repo!r} not found")
        return self.stores[repo]


def _ref_models(store: local.LocalStore) -> list[models.Ref]:
    return [models.Ref(id=k, commit_id=v) for k, v in store.list_branches().items()]


def _commit_model(c) -> models.Commit:
    return models.Commit(
        id=c.id,
        parents=list(c.parents),
        committer=c.committer,
        message=c.message,
        creation_date=c.creation_date,
        meta_range_id="",
        metadata=dict(c.metadata),
    )


def _page(results: list, after: str, amount: int, key) -> tuple[list, models.Pagination]:
    items = [r for r in results if key(r) > after] if after else list(results)
    page = items[:amount]
    has_more = len(items) > amount
    return page, models.Pagination(
        has_more=has_more,
        next_offset=key(page[-1]) if has_more else "",
        results=len(page),
        max_per_page=amount,
    )


def _diff_models(changes) -> list[models.Diff]:
    return [
        models.Diff(type=c.type, path=c.path, path_type="object", size_bytes=None) for c in changes
    ]


def _make_handler(fake: FakeLakeFS):
    class Handler(BaseHTTPRequestHandler):
        ROUTES: list = []

        def log_message(self, *args: object) -> None:
            pass

        # -- helpers ----------------------------------------------------------------------
        def _send(self, status: int, body: bytes = b"", ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, model) -> None:
            self._send(status, model.to_json().encode())

        def _error(self, status: int, message: str) -> None:
            self._json(status, models.Error(message=message))

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorized(self) -> bool:
            expected = base64.b64encode(f"{ACCESS_KEY}:{SECRET_KEY}".encode()).decode()
            return self.headers.get("Authorization") == f"Basic {expected}"

        def _multipart_content(self, raw: bytes) -> bytes:
            ctype = self.headers["Content-Type"]
            assert ctype.startswith("multipart/form-data"), ctype
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {ctype}\r\n\r\n".encode() + raw
            )
            for part in msg.iter_parts():
                if part.get_param("name", header="content-disposition") == "content":
                    return part.get_payload(decode=True)
            raise ValueError("multipart body has no 'content' field")

        # -- dispatch ---------------------------------------------------------------------
        def _dispatch(self, method: str) -> None:
            url = urlparse(self.path)
            path = url.path.removeprefix("/api/v1")
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if not self._authorized():
                self._body()
                return self._error(401, "error authenticating request")
            for route_method, pattern, fn in self.ROUTES:
                m = re.fullmatch(pattern, path)
                if route_method == method and m:
                    fake.requests.append((method, pattern))
                    args = [unquote(g) for g in m.groups()]
                    try:
                        return fn(self, query, *args)
                    except NotFound as e:
                        return self._error(404, str(e))
                    except MergeConflict as e:
                        return self._error(409, str(e))
                    except NothingToCommit as e:
                        return self._error(400, f"no changes: {e}")
                    except (StoreError, ValueError) as e:
                        # pydantic's ValidationError is a ValueError: a request the SDK's
                        # own models reject is a client bug, and the test sees a 400.
                        return self._error(400, str(e))
            self._error(404, f"fake lakeFS has no route {method} {path}")

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

        # -- routes -----------------------------------------------------------------------
        def get_repo(self, q, repo):
            fake.store(repo)
            self._json(
                200,
                models.Repository(
                    id=repo,
                    creation_date=int(time.time()),
                    default_branch="main",
                    storage_namespace=fake.namespaces[repo],
                ),
            )

        def create_repo(self, q):
            body = models.RepositoryCreation.from_json(self._body().decode())
            store = local.LocalStore(fake.root, body.name)
            store.default_branch = body.default_branch or "main"
            store.ensure_repository()
            fake.stores[body.name] = store
            fake.namespaces[body.name] = body.storage_namespace
            self._json(
                201,
                models.Repository(
                    id=body.name,
                    creation_date=int(time.time()),
                    default_branch=store.default_branch,
                    storage_namespace=body.storage_namespace,
                ),
            )

        def create_branch(self, q, repo):
            body = models.BranchCreation.from_json(self._body().decode())
            commit_id = fake.store(repo).create_branch(body.name, body.source)
            self._send(201, commit_id.encode(), "text/html")

        def list_branches(self, q, repo):
            refs = _ref_models(fake.store(repo))
            page, pag = _page(refs, q.get("after", ""), int(q.get("amount", 100)), lambda r: r.id)
            self._json(200, models.RefList(pagination=pag, results=page))

        def delete_branch(self, q, repo, branch):
            fake.store(repo).delete_branch(branch)
            self._send(204)

        def diff_branch(self, q, repo, branch):
            diffs = _diff_models(fake.store(repo).uncommitted(branch))
            page, pag = _page(
                diffs, q.get("after", ""), int(q.get("amount", 100)), lambda d: d.path
            )
            self._json(200, models.DiffList(pagination=pag, results=page))

        def upload(self, q, repo, branch):
            data = self._multipart_content(self._body())
            fake.store(repo).put(branch, q["path"], data)
            self._json(
                201,
                models.ObjectStats(
                    path=q["path"],
                    path_type="object",
                    physical_address=f"local://{repo}/{q['path']}",
                    checksum="",
                    size_bytes=len(data),
                    mtime=int(time.time()),
                ),
            )

        def delete_object(self, q, repo, branch):
            fake.store(repo).delete(branch, q["path"])
            self._send(204)

        def get_object(self, q, repo, ref):
            self._send(200, fake.store(repo).get(ref, q["path"]), "application/octet-stream")

        def list_objects(self, q, repo, ref):
            store = fake.store(repo)
            stats = [
                models.ObjectStats(
                    path=p,
                    path_type="object",
                    physical_address=f"local://{repo}/{p}",
                    checksum="",
                    size_bytes=None,
                    mtime=0,
                )
                for p in store.list(ref, q.get("prefix", ""))
            ]
            page, pag = _page(
                stats, q.get("after", ""), int(q.get("amount", 100)), lambda s: s.path
            )
            self._json(200, models.ObjectStatsList(pagination=pag, results=page))

        def commit(self, q, repo, branch):
            body = models.CommitCreation.from_json(self._body().decode())
            c = fake.store(repo).commit(branch, body.message, body.metadata or {})
            self._json(201, _commit_model(c))

        def log(self, q, repo, ref):
            commits = fake.store(repo).log(ref, limit=int(q.get("amount", 100)))
            self._json(
                200,
                models.CommitList(
                    pagination=models.Pagination(
                        has_more=False,
                        next_offset="",
                        results=len(commits),
                        max_per_page=int(q.get("amount", 100)),
                    ),
                    results=[_commit_model(c) for c in commits],
                ),
            )

        def diff_refs(self, q, repo, left, right):
            diffs = _diff_models(fake.store(repo).diff(left, right))
            page, pag = _page(
                diffs, q.get("after", ""), int(q.get("amount", 100)), lambda d: d.path
            )
            self._json(200, models.DiffList(pagination=pag, results=page))

        def merge(self, q, repo, source, dest):
            body = models.Merge.from_json(self._body().decode() or "{}")
            ref = fake.store(repo).merge(source, dest, body.message, body.metadata or {})
            self._json(200, models.MergeResult(reference=ref))

        def create_tag(self, q, repo):
            body = models.TagCreation.from_json(self._body().decode())
            commit_id = fake.store(repo).create_tag(body.id, body.ref)
            self._json(201, models.Ref(id=body.id, commit_id=commit_id))

    Handler.ROUTES = [
        ("GET", rf"/repositories/{Q}", Handler.get_repo),
        ("POST", r"/repositories", Handler.create_repo),
        ("POST", rf"/repositories/{Q}/branches", Handler.create_branch),
        ("GET", rf"/repositories/{Q}/branches", Handler.list_branches),
        ("DELETE", rf"/repositories/{Q}/branches/{Q}", Handler.delete_branch),
        ("GET", rf"/repositories/{Q}/branches/{Q}/diff", Handler.diff_branch),
        ("POST", rf"/repositories/{Q}/branches/{Q}/objects", Handler.upload),
        ("DELETE", rf"/repositories/{Q}/branches/{Q}/objects", Handler.delete_object),
        ("GET", rf"/repositories/{Q}/refs/{Q}/objects", Handler.get_object),
        ("GET", rf"/repositories/{Q}/refs/{Q}/objects/ls", Handler.list_objects),
        ("POST", rf"/repositories/{Q}/branches/{Q}/commits", Handler.commit),
        ("GET", rf"/repositories/{Q}/refs/{Q}/commits", Handler.log),
        ("GET", rf"/repositories/{Q}/refs/{Q}/diff/{Q}", Handler.diff_refs),
        ("POST", rf"/repositories/{Q}/refs/{Q}/merge/{Q}", Handler.merge),
        ("POST", rf"/repositories/{Q}/tags", Handler.create_tag),
    ]
    return Handler
