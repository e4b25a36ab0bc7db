import os
import uuid

import pytest

from mlops_assets.store import open_store
from mlops_assets_tests.fakes.lakefs_server import ACCESS_KEY, SECRET_KEY, FakeLakeFS


@pytest.fixture
def fake_lakefs(tmp_path):
    with FakeLakeFS(tmp_path / "fake-lakefs") as fake:
        yield fake


@pytest.fixture(
    params=[
        "local",
        "lakefs-fake",
        pytest.param("lakefs-live", marks=pytest.mark.lakefs_live),
    ]
)
def store(request, tmp_path):
    """The same contract runs against every backend."""
    if request.param == "local":
        s = open_store("local", "demo", root=str(tmp_path / "store"))
    elif request.param == "lakefs-fake":
        fake = request.getfixturevalue("fake_lakefs")
        s = open_store(
            "lakefs",
            "demo",
            endpoint=fake.url,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            storage_namespace="local://demo",
        )
    else:
        needed = (
            "LAKEFS_ENDPOINT",
            "LAKEFS_ACCESS_KEY_ID",
            "LAKEFS_SECRET_ACCESS_KEY",
            "LAKEFS_STORAGE_NAMESPACE",
        )
        missing = [v for v in needed if not os.environ.get(v)]
        if missing:
            pytest.skip(f"live lakeFS contract: set {', '.join(missing)} to run")
        s = open_store(
            "lakefs",
            f"mlops-contract-{uuid.uuid4().hex[:8]}",
            endpoint=os.environ["LAKEFS_ENDPOINT"],
            access_key_id=os.environ["LAKEFS_ACCESS_KEY_ID"],
            secret_access_key=os.environ["LAKEFS_SECRET_ACCESS_KEY"],
            storage_namespace=os.environ["LAKEFS_STORAGE_NAMESPACE"],
        )
    s.ensure_repository()
    return s
