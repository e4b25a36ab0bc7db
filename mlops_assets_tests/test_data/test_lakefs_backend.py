"""The Dagster layer on the lakeFS backend: resources built from dg.EnvVar, commit links in
the metadata. The server is the SDK-model-checked HTTP fake (no lakeFS server runs here)."""

import dagster as dg
import pytest

from mlops_assets.defs.keys import dataset_key
from mlops_assets.specs.model import get_spec
from mlops_assets.store import open_store
from mlops_assets_tests.conftest import seed_store
from mlops_assets_tests.fakes.lakefs_server import ACCESS_KEY, SECRET_KEY, FakeLakeFS


@pytest.fixture
def lakefs_env(tmp_path, monkeypatch):
    with FakeLakeFS(tmp_path / "fake") as fake:
        monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("MLOPS_DATA_BACKEND", "lakefs")
        monkeypatch.setenv("LAKEFS_ENDPOINT", fake.url)
        monkeypatch.setenv("LAKEFS_ACCESS_KEY_ID", ACCESS_KEY)
        monkeypatch.setenv("LAKEFS_SECRET_ACCESS_KEY", SECRET_KEY)
        monkeypatch.setenv("LAKEFS_STORAGE_NAMESPACE", "local://bucket")
        yield fake


def test_dataset_on_lakefs_links_the_commit(lakefs_env):
    from mlops_assets.definitions import defs

    spec = get_spec("churn")
    store = open_store(
        "lakefs",
        spec.dataset.repository,
        endpoint=lakefs_env.url,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        storage_namespace="local://bucket",
    )
    head = seed_store(store, spec, days=2, rows=120)
    assert lakefs_env.namespaces["churn"] == "local://bucket/churn"
    d = defs()
    resource = d.resources["data_store"]
    assert resource.backend == "lakefs"
    with dg.instance_for_test() as instance:
        job = d.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[dataset_key("churn")],
            raise_on_error=False,
        )
        event = instance.get_latest_materialization_event(dataset_key("churn"))
        meta = event.asset_materialization.metadata
        assert meta["lakefs_commit"].value == head
        assert meta["lakefs_commit_url"].value == (
            f"{lakefs_env.url}/repositories/churn/commits/{head}"
        )
        # 240 rows >= min_rows: every blocking check passed on data read over the lakeFS API.
        assert result.success
        assert all(c.passed for c in result.get_asset_check_evaluations())


def test_lakefs_backend_without_endpoint_fails_with_the_variable_named(monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MLOPS_DATA_BACKEND", "lakefs")
    monkeypatch.delenv("LAKEFS_ENDPOINT", raising=False)
    from mlops_assets.definitions import defs

    d = defs()
    with dg.instance_for_test() as instance:
        job = d.resolve_implicit_global_asset_job_def()
        with pytest.raises(Exception, match="LAKEFS_ENDPOINT"):
            job.execute_in_process(instance=instance, asset_selection=[dataset_key("churn")])
