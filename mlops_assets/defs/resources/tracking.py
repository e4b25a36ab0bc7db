"""MLflow for the Dagster layer: a ConfigurableResource built on dagster-mlflow's ``MlFlow``.

dagster-mlflow's ``mlflow_tracking`` is a function-style resource (not a ConfigurableResource,
dagster-io/dagster#15053) that starts one MLflow run per Dagster run when the resource is
initialised, and relies on the ``end_mlflow_on_run_finished`` op-job hook to end it, which never
fires for asset materializations and ends runs early (#21872). This resource keeps its useful
part, the ``MlFlow`` class (runs tagged with the Dagster run id and resumed on a retry of the
same Dagster run, env tags, chunked params), but starts the run only inside
``start_run(...)`` and always ends it there: FINISHED, or FAILED if the body raised.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import dagster as dg
from pydantic import Field

from mlops_assets.settings import Settings
from mlops_assets.specs import ModelSpec
from mlops_assets.training.tracking import Tracking


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
    ) -> Iterator[object]:
        """An active MLflow run for one materialization, ended however the body exits."""
        import mlflow
        from dagster_mlflow.resources import MlFlow

        experiment = tracking.experiment_name(spec)
        tracking.ensure_experiment(spec)
        init = SimpleNamespace(
            log=context.log,
            run_id=context.run_id,
            dagster_run=SimpleNamespace(job_name=run_name),
            resource_config={
                "experiment_name": experiment,
                "mlflow_tracking_uri": tracking.tracking_uri,
                "parent_run_id": None,
                "mlflow_run_id": None,
                "env": {},
                "env_to_tag": None,
                "extra_tags": tags,
            },
        )
        while mlflow.active_run():  # a run a previous step left behind did not finish
            mlflow.end_run("FAILED")
        try:
            # MlFlow() starts the run and then tags it: inside the try, so a failure while
            # tagging still ends the run.
            yield tracking.call(f"start a run in experiment {experiment!r}", lambda _: MlFlow(init))
        except BaseException as e:
            status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
            _end_all(tracking, status, context)
            raise
        else:
            tracking.call("end the run", lambda _: mlflow.end_run("FINISHED"))
        finally:
            _end_all(tracking, "FAILED", context)


def _end_all(tracking: Tracking, status: str, context) -> None:
    import mlflow

    while mlflow.active_run():
        try:
            mlflow.end_run(status)
        except Exception as e:  # the server is gone: drop the local run, say so
            context.log.warning(
                f"could not mark the MLflow run {status} on {tracking.tracking_uri}: {e}"
            )
            mlflow.tracking.fluent._active_run_stack.get().clear()


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
