"""The production instance config on a real PostgreSQL cluster: a real materialization of the
churn pipeline (data, features, training with the embedded MLflow, the promotion gate), read
back through a fresh instance and straight from the tables; the per-model run limit; and the
`dagster asset materialize` command line on the same config."""

import os
import subprocess
import uuid

import dagster as dg
import pytest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._utils.tags import TagConcurrencyLimitsCounter
from dagster_postgres import (
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)

from mlops_assets.defs.keys import (
    dataset_key,
    features_key,
    model_evaluation_key,
    raw_data_key,
    trained_model_key,
)
from mlops_assets_tests.conftest import pin_mlflow_http_env, seed_store
from mlops_assets_tests.processes import BIN, REPO

DATASET_CHECKS = ("schema", "nulls", "ranges", "row_count", "duplicate_keys")


@pytest.fixture
def churn(production_home, tmp_path, monkeypatch):
    """Embedded data and MLflow under tmp_path; Dagster on the production config (Postgres)."""
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    for var in ("MLOPS_DATA_BACKEND", "MLOPS_SPECS_DIR", "MLFLOW_TRACKING_URI", "MLFLOW_UI_URL"):
        monkeypatch.delenv(var, raising=False)
    pin_mlflow_http_env(monkeypatch)  # restored after the test
    from mlops_assets import settings
    from mlops_assets.specs.model import get_spec
    from mlops_assets.store.local import LocalStore

    spec = get_spec("churn")
    head = seed_store(LocalStore(settings.store_root(), spec.dataset.repository), spec, 6, 250)
    return production_home, head


def _tables(postgres, db, sql, *args):
    conn = postgres.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def test_a_real_materialization_is_stored_in_postgres(churn, postgres):
    home, head = churn
    from mlops_assets.definitions import defs

    d = defs()
    keys = [
        dataset_key("churn"),
        features_key("churn"),
        trained_model_key("churn"),
        model_evaluation_key("churn"),
    ]
    with dg.DagsterInstance.from_config(str(home.path)) as instance:
        # Not SQLite by accident: every storage is dagster-postgres.
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        observed = d.resolve_job_def("observe_sources").execute_in_process(
            instance=instance, asset_selection=[raw_data_key("churn")]
        )
        result = d.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=keys, tags={"mlops/model": "churn"}
        )
        assert result.success

    # Read back through a new instance: what the webserver and daemon would see.
    with dg.DagsterInstance.from_config(str(home.path)) as instance:
        run = instance.get_run_by_id(result.run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["mlops/model"] == "churn"
        events = {key: instance.get_latest_materialization_event(key) for key in keys}
        assert all(e is not None and e.run_id == result.run_id for e in events.values())
        mats = {key: e.asset_materialization for key, e in events.items()}
        # Data versions: the lakeFS commit for the data, the run hash for the model.
        source = instance.get_latest_data_version_record(raw_data_key("churn"), is_source=True)
        assert source.asset_observation.tags["dagster/data_version"] == head
        assert mats[dataset_key("churn")].tags["dagster/data_version"] == head
        model = mats[trained_model_key("churn")]
        assert model.tags["dagster/data_version"] == model.metadata["run_hash"].value
        assert model.metadata["lakefs_commit"].value == head
        assert model.metadata["model_version"].value == 1
        # Blocking checks and the promotion gate, with their verdicts.
        for key, name in [(dataset_key("churn"), c) for c in DATASET_CHECKS] + [
            (model_evaluation_key("churn"), "promotion_gate")
        ]:
            record = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(key, name))
            assert record is not None, name
            assert record.run_id == result.run_id
            assert record.status == AssetCheckExecutionRecordStatus.SUCCEEDED, name
            assert record.event.dagster_event.event_specific_data.passed
        # The gate's pool took its limit from pools.default_limit, as on the embedded instance.
        pool = instance.event_log_storage.get_concurrency_info("mlops_gate_churn")
        assert (pool.slot_count, pool.using_default_limit) == (1, True)

    # And straight from the tables.
    runs = dict(_tables(postgres, home.db, "SELECT run_id, status FROM runs"))
    assert runs == {observed.run_id: "SUCCESS", result.run_id: "SUCCESS"}
    stored = _tables(
        postgres,
        home.db,
        "SELECT DISTINCT asset_key FROM event_logs "
        "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND run_id = %s",
        result.run_id,
    )
    assert {row[0] for row in stored} == {key.to_string() for key in keys}
    checks = _tables(
        postgres,
        home.db,
        "SELECT check_name, execution_status FROM asset_check_executions WHERE run_id = %s",
        result.run_id,
    )
    assert {name for name, _ in checks} >= {*DATASET_CHECKS, "promotion_gate"}
    assert {status for _, status in checks} == {"SUCCEEDED"}
    limits = _tables(postgres, home.db, 'SELECT concurrency_key, "limit" FROM concurrency_limits')
    assert ("mlops_gate_churn", 1) in limits


def test_one_run_per_model_at_a_time(production_home):
    """The queue's tag limit from the production file, applied by Dagster's own counter to runs
    stored in Postgres: a second churn run waits, a demand run does not."""

    @dg.op
    def noop() -> None:
        pass

    @dg.job
    def retrain() -> None:
        noop()

    with dg.DagsterInstance.from_config(str(production_home.path)) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        running = instance.create_run_for_job(
            retrain, tags={"mlops/model": "churn"}, status=dg.DagsterRunStatus.STARTED
        )
        # Candidates the daemon would dequeue next (stored before submission: QUEUED runs need
        # a code location origin, which is not what is under test here).
        waiting = {
            model: instance.create_run_for_job(retrain, tags={"mlops/model": model})
            for model in ("churn", "demand")
        }
        in_progress = instance.get_runs(
            filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
        )
        assert [r.run_id for r in in_progress] == [running.run_id]
        counter = TagConcurrencyLimitsCounter(limits, list(in_progress))
        assert counter.is_blocked(instance.get_run_by_id(waiting["churn"].run_id))
        assert not counter.is_blocked(instance.get_run_by_id(waiting["demand"].run_id))


@pytest.mark.e2e
def _run(cmd: list, env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"


def test_dagster_asset_materialize_cli_on_the_production_config(production_home, postgres):
    dagster_home = production_home.path
    ours = ("MLOPS_", "LAKEFS_", "MLFLOW_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(production_home.env)
    env["MLOPS_DATA_DIR"] = str(dagster_home / f"data-{uuid.uuid4().hex[:6]}")
    seed = [BIN / "mlops", "--no-report", "seed", "--spec", "churn", "--days", "3"]
    _run([*seed, "--rows", "200", "--end", "2026-11-30"], env)
    materialize = [BIN / "dagster", "asset", "materialize", "-m", "mlops_assets.definitions"]
    _run([*materialize, "--select", "churn/raw_data,churn/dataset,churn/features"], env)
    runs = _tables(postgres, production_home.db, "SELECT run_id, status FROM runs")
    assert len(runs) == 1 and runs[0][1] == "SUCCESS"
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        event = instance.get_latest_materialization_event(features_key("churn"))
        assert event is not None and event.run_id == runs[0][0]
        assert event.asset_materialization.metadata["train_rows"].value > 0
    # Nothing went to SQLite beside it.
    assert not [p for p in dagster_home.rglob("*.db") if "data-" not in str(p)]
