"""The real command lines on a fresh DAGSTER_HOME: mlops, dagster definitions validate,
dagster asset materialize."""

import os
import subprocess

import dagster as dg
import pytest

from mlops_assets.defs.keys import dataset_key, features_key, raw_data_key
from mlops_assets.specs import load_specs
from mlops_assets.store.local import LocalStore
from mlops_assets_tests.processes import BIN, REPO, fresh_home

pytestmark = pytest.mark.e2e


@pytest.fixture
def home(tmp_path):
    return fresh_home(tmp_path)


def run(cmd, env, expect=0, timeout=240):
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == expect, (
        f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    return proc


def materialize_data_and_features(env):
    cmd = ["asset", "materialize", "-m", "mlops_assets.definitions"]
    run([BIN / "dagster", *cmd, "--select", "group:data or group:features"], env)


def test_definitions_validate(home):
    proc = run([BIN / "dagster", "definitions", "validate", "-w", "workspace.yaml"], home)
    assert "All code locations passed validation" in proc.stdout + proc.stderr


def test_seed_materialize_and_a_bad_batch_that_never_reaches_main(home):
    seeded = run(
        [BIN / "mlops", "seed", "--days", "3", "--rows", "100", "--end", "2026-11-03"], home
    )
    assert "[churn] seeded 3 day(s)" in seeded.stdout
    materialize_data_and_features(home)
    data_dir = os.path.join(home["DAGSTER_HOME"], "mlops-data")
    with dg.DagsterInstance.from_config(home["DAGSTER_HOME"]) as instance:
        for spec in load_specs():
            head = LocalStore(os.path.join(data_dir, "lakefs-local"), spec.dataset.repository)
            head = head.head("main")
            for key in (dataset_key(spec.name), features_key(spec.name)):
                event = instance.get_latest_materialization_event(key)
                assert event is not None, key
                assert event.asset_materialization.metadata["lakefs_commit"].value == head

    churn = LocalStore(os.path.join(data_dir, "lakefs-local"), "churn")
    before = churn.head("main")
    bad = run([BIN / "mlops", "ingest", "churn", "--fault", "nulls"], home, expect=2)
    assert "rejected batches/" in bad.stdout and "main is unchanged" in bad.stdout
    assert churn.head("main") == before
    assert any(b.startswith("ingest-") for b in churn.list_branches())

    with dg.DagsterInstance.from_config(home["DAGSTER_HOME"]) as instance:
        record = instance.get_latest_asset_check_evaluation_record(
            dg.AssetCheckKey(raw_data_key("churn"), "ingest_audit")
        )
        evaluation = record.event.dagster_event.event_specific_data
        assert not evaluation.passed
        assert "column 'customer_id'" in evaluation.description
        assert "rule 'nulls'" in evaluation.description

    good = run([BIN / "mlops", "ingest", "churn"], home)
    assert "published batches/" in good.stdout
    assert churn.head("main") != before


def test_materialize_before_any_data_says_what_to_run(home):
    """Nothing in the Dagster layer seeds data: a missing repository is an error naming it and
    the command that creates it (the demo's `mlops seed`, or ingesting your own file)."""
    cmd = ["asset", "materialize", "-m", "mlops_assets.definitions", "--select", "churn/dataset"]
    failed = run([BIN / "dagster", *cmd], home, expect=1)
    output = failed.stdout + failed.stderr
    assert "no repository 'churn'" in output and "`mlops seed`" in output, output[-3000:]
    assert "mlops ingest churn --file" in output
    store = LocalStore(os.path.join(home["DAGSTER_HOME"], "mlops-data", "lakefs-local"), "churn")
    assert not store.path.exists()  # and nothing was created behind the user's back


def test_cli_errors_name_the_problem(home):
    proc = run([BIN / "mlops", "--no-report", "ingest", "nosuch"], home, expect=1)
    assert "no model spec named 'nosuch'" in proc.stderr
    env = {**home, "MLOPS_DATA_BACKEND": "lakefs"}
    proc = run([BIN / "mlops", "--no-report", "ingest", "churn"], env, expect=1)
    assert "LAKEFS_ENDPOINT" in proc.stderr


@pytest.mark.parametrize(
    ("today", "seeded", "ingested"),
    [
        ("2028-03-01", ["2028-02-28", "2028-02-29"], "2028-03-01"),
        ("2031-01-01", ["2030-12-30", "2030-12-31"], "2031-01-01"),
    ],
)
def test_the_demo_follows_the_clock_on_any_date(home, today, seeded, ingested):
    """Without a date, `mlops seed` ends yesterday and `mlops ingest` lands the next day: under
    libfaketime at a leap day's morrow and a new year, as on any other day."""
    faketime = ["faketime", f"{today} 09:00:00"]
    # The suite itself may run under faketime (scripts/test-on-date.sh): start from the real
    # clock, or the inner date would be taken relative to the outer fake one.
    home = {k: v for k, v in home.items() if not k.startswith("FAKETIME") and k != "LD_PRELOAD"}
    cmd = [BIN / "mlops", "--no-report", "seed", "--days", "2", "--rows", "200", "--spec", "churn"]
    assert "[churn] seeded 2 day(s)" in run([*faketime, *cmd], home).stdout
    store = LocalStore(os.path.join(home["DAGSTER_HOME"], "mlops-data", "lakefs-local"), "churn")
    files = store.list("main", "batches/")
    assert [f.split("day-")[1][:10] for f in files] == seeded, files
    run([*faketime, BIN / "mlops", "--no-report", "ingest", "churn", "--rows", "200"], home)
    assert f"batches/day-{ingested}.csv" in store.list("main", "batches/")
