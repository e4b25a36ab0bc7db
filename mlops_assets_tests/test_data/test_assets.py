"""The data and features assets through dg.materialize on a temporary Dagster instance."""

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.defs.keys import dataset_key, features_key, raw_data_key
from mlops_assets.demo.simulator import simulate_batch, to_csv_bytes
from mlops_assets.store.local import LocalStore
from mlops_assets_tests.conftest import DAY0, seed_store


@pytest.fixture
def env(tmp_path, monkeypatch, spec):
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MLOPS_DATA_BACKEND", raising=False)
    from mlops_assets import settings
    from mlops_assets.definitions import defs

    store = LocalStore(settings.store_root(), spec.dataset.repository)
    with dg.instance_for_test() as instance:
        yield defs(), store, instance


def _observe(d: dg.Definitions, spec, instance) -> str:
    job = d.resolve_job_def("observe_sources")
    result = job.execute_in_process(instance=instance, asset_selection=[raw_data_key(spec.name)])
    assert result.success
    (obs,) = [
        e.event_specific_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert obs.asset_key == raw_data_key(spec.name)
    return obs.tags["dagster/data_version"]


def _materialize(d: dg.Definitions, spec, instance, raise_on_error=True):
    return _run(d, instance, [dataset_key(spec.name), features_key(spec.name)], raise_on_error)


def _run(d: dg.Definitions, instance, keys, raise_on_error=True, run_config=None):
    job = d.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance,
        asset_selection=keys,
        raise_on_error=raise_on_error,
        run_config=run_config,
    )


def _latest(instance, key):
    return instance.get_latest_materialization_event(key).asset_materialization


def test_raw_data_version_is_main_head_commit(env, spec):
    d, store, instance = env
    head = seed_store(store, spec)
    assert _observe(d, spec, instance) == head


def test_dataset_and_features_record_the_commit_they_read(env, spec):
    d, store, instance = env
    head = seed_store(store, spec)
    _observe(d, spec, instance)
    result = _materialize(d, spec, instance)
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {
        "schema",
        "nulls",
        "ranges",
        "row_count",
        "duplicate_keys",
    }
    assert all(c.passed for c in checks)
    ds = _latest(instance, dataset_key(spec.name))
    assert ds.metadata["lakefs_commit"].value == head
    assert ds.tags["dagster/data_version"] == head
    assert ds.metadata["dagster/row_count"].value == 3 * 120
    assert ds.metadata["lakefs_repository"].value == spec.dataset.repository
    assert "|" in ds.metadata["preview"].value  # a markdown table
    cols = {c.name for c in ds.metadata["dagster/column_schema"].schema.columns}
    assert set(spec.dataset.columns) <= cols
    feats = _latest(instance, features_key(spec.name))
    assert feats.metadata["lakefs_commit"].value == head
    assert feats.metadata["train_rows"].value + feats.metadata["holdout_rows"].value == 360
    assert Path(feats.metadata["reference_profile"].value).exists()


def test_dataset_reads_the_observed_commit_not_the_latest(env, spec):
    d, store, instance = env
    observed = seed_store(store, spec, days=2)
    _observe(d, spec, instance)
    # A new batch lands on main after the observation: the dataset must not see it.
    df = simulate_batch(spec.simulator, DAY0 + dt.timedelta(days=5), rows=120)
    store.put("main", "batches/late.csv", to_csv_bytes(df))
    later = store.commit("main", "late batch").id
    _materialize(d, spec, instance)
    ds = _latest(instance, dataset_key(spec.name))
    assert ds.metadata["lakefs_commit"].value == observed
    assert ds.metadata["dagster/row_count"].value == 240
    # Once observed, the next materialization reads the new commit.
    assert _observe(d, spec, instance) == later
    _materialize(d, spec, instance)
    assert _latest(instance, dataset_key(spec.name)).metadata["dagster/row_count"].value == 360


def test_bad_data_on_main_fails_blocking_checks_and_stops_features(env, spec):
    d, store, instance = env
    seed_store(store, spec, days=2)
    # Bypass write-audit-publish: someone committed a broken file straight to main.
    df = simulate_batch(spec.simulator, DAY0 + dt.timedelta(days=5), rows=50)
    df.loc[df.index[:3], spec.dataset.key] = None
    store.put("main", "batches/direct.csv", to_csv_bytes(df))
    store.commit("main", "unaudited write")
    _observe(d, spec, instance)
    result = _materialize(d, spec, instance, raise_on_error=False)
    assert not result.success
    nulls = [c for c in result.get_asset_check_evaluations() if c.check_name == "nulls"]
    assert len(nulls) == 1 and not nulls[0].passed
    assert "file 'batches/direct.csv'" in nulls[0].description
    assert f"column '{spec.dataset.key}'" in nulls[0].description
    assert "rule 'nulls'" in nulls[0].description
    assert instance.get_latest_materialization_event(features_key(spec.name)) is None


def test_a_given_commit_can_be_read_by_config(env, spec):
    d, store, instance = env
    first = seed_store(store, spec, days=1)
    seed_more = simulate_batch(spec.simulator, DAY0 + dt.timedelta(days=9), rows=120)
    store.put("main", "batches/more.csv", to_csv_bytes(seed_more))
    store.commit("main", "more")
    result = _run(
        d,
        instance,
        [dataset_key(spec.name)],
        raise_on_error=False,
        run_config=dg.RunConfig(
            ops={dataset_key(spec.name).to_python_identifier(): {"config": {"ref": first}}}
        ),
    )
    ds = _latest(instance, dataset_key(spec.name))
    assert ds.metadata["lakefs_commit"].value == first
    assert ds.metadata["dagster/row_count"].value == 120
    # 120 rows is below min_rows=200: the blocking row_count check says so.
    rc = [c for c in result.get_asset_check_evaluations() if c.check_name == "row_count"]
    assert not rc[0].passed and "min_rows=200" in rc[0].description
