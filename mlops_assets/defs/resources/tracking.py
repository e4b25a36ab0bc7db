"""MLflow for the Dagster layer: a ConfigurableResource that starts and ends the runs itself.

dagster-mlflow's ``mlflow_tracking`` is a function-style resource (not a ConfigurableResource,
dagster-io/dagster#15053) that starts one MLflow run per Dagster run when the resource is
initialised, and relies on the ``end_mlflow_on_run_finished`` op-job hook to end it, which never
fires for asset materializations and ends runs early (#21872). This resource keeps what was
useful there, with public MLflow API only: the run is tagged ``dagster_run_id`` (the tag
dagster-mlflow uses) and resumed by that tag on a retry of the same Dagster run; it is started
only inside ``start_run(...)`` and always ended there: FINISHED, or FAILED (KILLED on Ctrl-C)
if the body raised.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from mlops_assets.settings import Settings
from mlops_assets.specs import ModelSpec
from mlops_assets.training.tracking import Tracking

if TYPE_CHECKING:
    from mlflow import ActiveRun

# The tag dagster-mlflow puts on its runs; a retry of a Dagster run finds its MLflow run by it.
DAGSTER_RUN_ID = "dagster_run_id"


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking and model registry: embedded SQLite store or a tracking server."""

    tracking_uri: str = Field(
        description="sqlite:///path/mlflow.db (embedded) or http(s)://tracking-server:5000"
    )
    artifact_root: str = Field(
        default="",
        description="embedded only: folder for artifacts of new experiments (a server decides)",
    )
    ui_url: str = Field(default="", description="MLflow UI base URL for links in Dagster")
    experiment_prefix: str = Field(
        default="mlops-assets/", description="experiment name = prefix + spec name"
    )
    max_retries: int = Field(
        default=4, ge=0, le=20, description="retries of a request that fails to connect or 5xx"
    )
    backoff_seconds: int = Field(
        default=1, ge=0, le=60, description="exponential backoff base: waits b, 2b, 4b, ... s"
    )
    timeout_seconds: float = Field(default=30.0, gt=0, description="per-request timeout")

    def tracking(self) -> Tracking:
        t = Tracking(
            tracking_uri=self.tracking_uri,
            artifact_root=self.artifact_root,
            experiment_prefix=self.experiment_prefix,
            ui_url=self.ui_url,
            max_retries=self.max_retries,
            backoff_seconds=self.backoff_seconds,
            timeout_seconds=self.timeout_seconds,
        )
        t.configure()
        return t

    @contextmanager
    def start_run(
        self,
        context: dg.AssetExecutionContext,
        tracking: Tracking,
        spec: ModelSpec,
        run_name: str,
        tags: dict[str, str],
    ) -> Iterator["ActiveRun"]:
        """The active MLflow run of this Dagster run in the spec's experiment (resumed if an
        earlier attempt of the same Dagster run started it), ended however the body exits."""
        import mlflow

        experiment_id = tracking.ensure_experiment(spec)
        dagster_run_id = context.run.run_id
        _end_all(tracking, "FAILED", context)  # a run a previous step left behind did not finish

        def start(client) -> "ActiveRun":
            query = f"tags.{DAGSTER_RUN_ID} = '{dagster_run_id}'"
            if found := client.search_runs([experiment_id], query, max_results=1):
                # MLflow refuses to resume a run outside the process's active experiment,
                # which an earlier step or library call in this process may have set.
                mlflow.set_experiment(experiment_id=experiment_id)
                resumed = mlflow.start_run(run_id=found[0].info.run_id)  # RUNNING again
                mlflow.set_tags(tags)
                return resumed
            # Tagged at creation, in the same request: a retry finds the run even if this
            # attempt dies right after.
            first = {**tags, DAGSTER_RUN_ID: dagster_run_id}
            return mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=first)

        try:
            # Inside the try: a failure while tagging a resumed run still ends it.
            experiment = tracking.experiment_name(spec)
            run = tracking.call(f"start a run in experiment {experiment!r}", start)
            yield run
        except BaseException as e:
            _end_all(tracking, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED", context)
            raise
        else:
            tracking.call("end the run", lambda _: mlflow.end_run("FINISHED"))
        finally:
            _end_all(tracking, "FAILED", context)


def _end_all(tracking: Tracking, status: str, context: dg.AssetExecutionContext) -> None:
    """End every MLflow run active in this thread with ``status``; a failure to tell the server
    is logged, not raised (the body's own error, if any, is the one that matters).

    Public API only: ``mlflow.end_run()`` takes the run off this thread's active-run stack
    *before* it asks the server to mark it terminated (MLflow 3, ``tracking/fluent.py``), so
    when the server is gone the run is no longer active here, the loop moves on and the next
    ``mlflow.start_run`` in this process works; the server, if it comes back, shows the run as
    RUNNING, hence the warning naming it. test_tracking asserts that no run stays active, so
    an MLflow that changed this order would fail there rather than in production.
    """
    import mlflow

    while run := mlflow.active_run():
        try:
            tracking.call(f"mark the run {status}", lambda _: mlflow.end_run(status))
        except Exception as e:
            context.log.warning(
                f"could not mark MLflow run {run.info.run_id} {status} on the tracking server "
                f"{tracking.tracking_uri}: {e}"
            )
            if (still := mlflow.active_run()) and still.info.run_id == run.info.run_id:
                break  # never loop forever; the next start_run would then say which run


def build_mlflow_resource(settings: Settings) -> MlflowResource:
    """A tracking server where MLFLOW_TRACKING_URI says so, else the embedded SQLite store."""
    if settings.tracking_uri:
        return MlflowResource(
            tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"), ui_url=settings.mlflow_ui_url
        )
    uri, artifacts = settings.embedded_tracking()
    return MlflowResource(
        tracking_uri=uri, artifact_root=str(artifacts), ui_url=settings.mlflow_ui_url
    )


def production_version(tracking: Tracking, spec: ModelSpec, what: str):
    """The registry version that holds the ``production`` alias (what serves now): what the
    monitoring and batch-scoring assets work on. None yet is a failure that says what to do."""
    from mlops_assets.defs.keys import deployment_key
    from mlops_assets.training.tracking import PRODUCTION

    live = tracking.version_by_alias(spec.model_name, PRODUCTION)
    if live is None:
        raise dg.Failure(
            f"{spec.model_name!r} has no '{PRODUCTION}' version: nothing serves, nothing {what}. "
            f"Materialize {deployment_key(spec.name).to_user_string()} (the gate must pass "
            "first)",
            allow_retries=False,
        )
    return live
