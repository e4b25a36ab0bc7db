"""The lakeFS adapter's failure modes, each with a message that says what to do."""

import socket

import pytest

from mlops_assets.store import StoreAuthError, StoreError, StoreUnavailable, open_store
from mlops_assets_tests.fakes.lakefs_server import ACCESS_KEY, SECRET_KEY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_endpoint_down_names_the_endpoint_and_the_fix():
    url = f"http://127.0.0.1:{_free_port()}"
    store = open_store(
        "lakefs", "demo", endpoint=url, access_key_id="k", secret_access_key="s", timeout_seconds=2
    )
    with pytest.raises(StoreUnavailable, match=f"lakeFS at {url} is unreachable.*LAKEFS_ENDPOINT"):
        store.head("main")


def test_refused_keys_name_the_variables_to_check(fake_lakefs):
    store = open_store(
        "lakefs", "demo", endpoint=fake_lakefs.url, access_key_id="wrong", secret_access_key="no"
    )
    with pytest.raises(StoreAuthError, match=r"refused the credentials.*LAKEFS_ACCESS_KEY_ID"):
        store.ensure_repository()


def test_missing_repository_without_namespace_says_how_to_create_it(fake_lakefs):
    store = open_store(
        "lakefs",
        "absent",
        endpoint=fake_lakefs.url,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )
    with pytest.raises(StoreError, match="LAKEFS_STORAGE_NAMESPACE"):
        store.ensure_repository()


def test_adapter_uses_only_documented_endpoints(fake_lakefs):
    store = open_store(
        "lakefs",
        "demo",
        endpoint=fake_lakefs.url + "/api/v1",
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        storage_namespace="local://demo",
    )
    store.ensure_repository()
    store.put("main", "x.csv", b"1")
    store.commit("main", "x")
    assert store.commit_url("abc") == f"{fake_lakefs.url}/repositories/demo/commits/abc"
    methods = {m for m, _ in fake_lakefs.requests}
    assert methods <= {"GET", "POST", "DELETE"}
    assert ("POST", r"/repositories/([^/]+)/branches/([^/]+)/commits") in fake_lakefs.requests
