"""A stale model: with nothing new on main it raises an alert and retrains nothing; with new
data it retrains; a failed retraining is tried again with backoff, never dropped. On a real
instance, a real store, a real (failing) retraining run and a real inference server, whose
``/metrics`` carries the alert as a gauge; the sensor's clock is pinned."""

import datetime as dt
import os
import re

import dagster as dg
import httpx
import pytest
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

from mlops_assets.defs.data.assets import report_main_commit
from mlops_assets.defs.keys import retrain_keys, trained_model_key
from mlops_assets.defs.monitoring.sensors import build_freshness_sensor, retry_delay
from mlops_assets.defs.resources.serving import ServingResource
from mlops_assets.demo.simulator import simulate_batch, to_csv_bytes
from mlops_assets.ingest import ingest_batch
from mlops_assets_tests.conftest import DAY0
from mlops_assets_tests.processes import BIN, free_port, start, stop, wait_until
from mlops_assets_tests.servers import server_env
from mlops_assets_tests.test_training.conftest import make_env

FAILED_AT = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC).timestamp()
RETRY = 60.0
TOKEN = "staleness-test-token"
GAUGE = re.compile(r'mlops_model_stale_without_new_data\{model="churn",version="(\w+)"\} (\S+)')


class InferenceServer:
    """A real ``mlops serve`` with no model yet: it takes the monitoring figures all the same."""

    def __init__(self, log):
        self.port, self.log, self.proc = free_port(), log, None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # the test's data and specs folders (make_env sets them in this process's environment)
        keep = {k: os.environ[k] for k in ("MLOPS_DATA_DIR", "MLOPS_SPECS_DIR")}
        cmd = [str(BIN / "mlops"), "serve", "--port", str(self.port), "--poll-seconds", "0"]
        self.proc = start(cmd, server_env(MLOPS_SERVING_TOKEN=TOKEN, **keep), self.log)
        wait_until("inference server", self.live, 120, self.proc, self.log)

    def live(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v2/health/live", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


@pytest.fixture
def inference_server(tmp_path):
    server = InferenceServer(tmp_path / "serve.log")
    yield server
    server.stop()


def gauge(url: str) -> tuple[str, str] | None:
    found = GAUGE.findall(httpx.get(f"{url}/metrics", timeout=5).text)
    return found[0] if found else None


def test_backoff_doubles_up_to_its_cap():
    assert [retry_delay(n, 60, 300) for n in (1, 2, 3, 4, 5)] == [60, 120, 240, 300, 300]


def test_stale_without_new_data_alerts_with_new_data_retrains_and_a_failure_is_retried(
    tmp_path, monkeypatch, inference_server
):
    env = make_env(tmp_path, monkeypatch, None)
    inference_server.start()
    url = inference_server.url
    spec = env.spec("churn")
    store = env.store(spec)
    learned = env.seed(spec, days=3, rows=120)
    now = {"t": FAILED_AT + 3600}
    sensor = build_freshness_sensor(spec, retry_seconds=RETRY, clock=lambda: now["t"])
    with dg.instance_for_test() as instance:

        def tick(cursor):
            serving = ServingResource(url=url, token=TOKEN)
            with dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"serving": serving}
            ) as ctx:
                return sensor(ctx), ctx.cursor

        # the model learned main's head; main has not moved since; the model goes stale
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                trained_model_key("churn"),
                metadata={"lakefs_commit": learned, "model_version": "1"},
            )
        )
        report_main_commit(instance, "churn", learned, {"source": "test"})
        instance._report_runless_asset_event(  # what Dagster's freshness daemon records
            FreshnessStateChange(
                key=trained_model_key("churn"),
                new_state=FreshnessState.FAIL,
                previous_state=FreshnessState.PASS,
                state_change_timestamp=FAILED_AT,
            )
        )

        # no new data: an alert the UI shows (observation + tick message), no retraining
        result, cursor = tick(None)
        assert isinstance(result, dg.SensorResult) and not result.run_requests
        assert "ALERT" in result.skip_reason.skip_message
        assert f"main is still at {learned[:12]}" in result.skip_reason.skip_message
        (observation,) = result.asset_events
        assert observation.asset_key == trained_model_key("churn")
        assert observation.metadata["stale_without_new_data"].value == 1
        assert observation.metadata["model_data_commit"].value == learned
        # ... and a metric: every replica's gauge, for the MlopsModelStaleWithoutNewData rule
        assert gauge(url) == ("1", "1.0")
        again, cursor = tick(result.cursor)  # alerted once per head, said on every tick
        assert isinstance(again, dg.SkipReason) and "ALERT" in again.skip_message
        # a replica that restarts (it keeps no figures) has the gauge again at the next tick
        inference_server.stop()
        inference_server.start()
        assert gauge(url) is None
        again, cursor = tick(cursor)
        assert isinstance(again, dg.SkipReason) and gauge(url) == ("1", "1.0")
        # a retraining under way (launched by hand) ends "nothing to learn" while it runs ...
        manual = instance.add_run(
            dg.DagsterRun(
                job_name="__ASSET_JOB",
                status=dg.DagsterRunStatus.STARTED,
                asset_selection=frozenset(retrain_keys("churn")),
            )
        )
        busy, cursor = tick(cursor)
        assert "already under way" in busy.skip_message and gauge(url) == ("1", "0.0")
        # ... and with it gone and main unchanged, the alert is back
        instance.report_run_canceled(manual)
        again, cursor = tick(cursor)
        assert "ALERT" in again.skip_message and gauge(url) == ("1", "1.0")

        # new data on main: retrain (attempt 1)
        day = DAY0 + dt.timedelta(days=10)
        batch = to_csv_bytes(simulate_batch(spec.simulator, day, rows=120))
        assert ingest_batch(store, spec, batch, f"day-{day}").published
        report_main_commit(instance, "churn", store.head("main"), {"source": "test"})
        request, cursor = tick(cursor)
        assert isinstance(request, dg.RunRequest)
        assert request.run_key.endswith("-1") and request.tags["mlops/stale_attempt"] == "1"
        assert request.tags["mlops/trigger"] == "freshness"
        assert list(request.asset_selection) == retrain_keys("churn")
        assert gauge(url) == ("1", "0.0")  # the alert is over: a retraining is under way
        waiting, _ = tick(cursor)
        assert "already requested" in waiting.skip_message

        # the retraining runs and fails for real (a hyperparameter its spec refuses)
        job = env.defs.resolve_implicit_global_asset_job_def()
        run = job.execute_in_process(
            instance=instance,
            asset_selection=request.asset_selection,
            tags=request.tags,
            run_config={"ops": {"churn__trained_model": {"config": {"n_estimators": 0}}}},
            raise_on_error=False,
        )
        assert not run.success
        ended = instance.get_run_record_by_id(run.run_id).end_time

        # not dropped: attempt 2 after the backoff, not before
        now["t"] = ended + RETRY / 2
        early, cursor = tick(cursor)
        assert isinstance(early, dg.SkipReason), early
        assert "attempt 1" in early.skip_message and "failed; attempt 2 in" in early.skip_message
        now["t"] = ended + RETRY + 1
        retry, cursor = tick(cursor)
        assert isinstance(retry, dg.RunRequest)
        assert retry.run_key.endswith("-2") and retry.tags["mlops/stale_attempt"] == "2"
