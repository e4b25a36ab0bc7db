"""Group ``inference``: batch predictions, the most common way a Dagster user runs a model.

One daily-partitioned asset per spec scores the rows of a configured ref and prefix with the
version that holds the ``production`` alias when the run starts, and commits the answers as
Parquet to the spec's batch-predictions repository. The rows never enter the online
prediction log, so monitoring never mistakes a batch job for traffic.
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from mlops_assets.batch import BatchInputError, BatchRun, batch_repository, score_and_commit
from mlops_assets.defs.keys import batch_predictions_key, dataset_key, deployment_key
from mlops_assets.defs.metadata import MetadataEntry
from mlops_assets.defs.resources import DataStoreResource
from mlops_assets.defs.resources.tracking import MlflowResource, production_version
from mlops_assets.specs import ModelSpec

# Daily partitions from the start of the demo calendar; a run names its day explicitly.
PARTITIONS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_offset=1)


def _metadata(
    tracking, spec: ModelSpec, version: str, runtime: str, config, source, out, run: BatchRun
) -> dict[str, MetadataEntry]:
    """The model version, the data commit and the row count, with links to the model version
    and both commits where the registry and the store have a UI."""
    meta: dict[str, MetadataEntry] = {
        "model_version": dg.MetadataValue.int(int(version)),
        "registered_model": spec.model_name,
        "model_uri": f"models:/{spec.model_name}/{version}",
        "runtime": runtime,
        "data_commit": dg.MetadataValue.text(run.data_commit),
        "data_ref": config.ref,
        "data_prefix": config.prefix,
        "source_files": dg.MetadataValue.json(run.source_files),
        "row_count": dg.MetadataValue.int(run.rows),
        "predictions_repository": out.repository,
        "predictions_commit": dg.MetadataValue.text(run.predictions_commit),
        "predictions_path": run.path,
    }
    links = {
        "model_version_url": tracking.version_url(spec.model_name, version),
        "data_commit_url": source.commit_url(run.data_commit),
        "predictions_commit_url": out.commit_url(run.predictions_commit),
    }
    meta.update({k: dg.MetadataValue.url(v) for k, v in links.items() if v})
    return meta


def build_inference_assets(spec: ModelSpec) -> list[dg.AssetsDefinition]:
    class BatchPredictionsConfig(dg.Config):
        ref: str = Field(
            default="main",
            description="branch, tag or commit of the dataset's repository to read the rows at",
        )
        prefix: str = Field(
            default=spec.dataset.prefix,
            description="object prefix of the files to score (the dataset's batches by default)",
        )
        whole_prefix: bool = Field(
            default=False,
            description="score every row under the prefix, not only the rows of the partition's "
            f"day (by the event date column '{spec.dataset.timestamp}')",
        )

    BatchPredictionsConfig.__name__ = f"{spec.name.title().replace('_', '')}BatchConfig"

    @dg.asset(
        key=batch_predictions_key(spec.name),
        deps=[dataset_key(spec.name), deployment_key(spec.name)],
        group_name="inference",
        kinds={"lakefs", "scikit-learn", "parquet"},
        partitions_def=PARTITIONS,
        code_version=f"batch-predictions-1-{spec.digest(exclude={'description', 'freshness'})}",
        description=(
            f"'{spec.name}' rows of one day scored by the production model; Parquet committed "
            f"to {batch_repository(spec.dataset.repository)}."
        ),
    )
    def batch_predictions(
        context: dg.AssetExecutionContext,
        config: BatchPredictionsConfig,
        data_store: DataStoreResource,
        mlflow: MlflowResource,
    ) -> dg.MaterializeResult:
        from mlops_assets.serving.compiled import load_for_serving, runtime_of
        from mlops_assets.training.pipeline import spec_types

        day = dt.date.fromisoformat(context.partition_key)
        tracking = mlflow.tracking()
        version = str(production_version(tracking, spec, "to score with").version)
        model, _ = load_for_serving(tracking, spec.model_name, version, trusted=spec_types(spec))

        source = data_store.open(spec.dataset.repository)
        out = data_store.open(batch_repository(spec.dataset.repository))
        day_or_all = None if config.whole_prefix else day
        extra = {"partition": context.partition_key, "dagster_run_id": context.run.run_id}
        try:
            run = score_and_commit(
                source, out, model, spec, version, config.ref, config.prefix, day_or_all, extra
            )
        except BatchInputError as e:
            raise dg.Failure(str(e), allow_retries=False) from None
        context.log.info(
            f"scored {run.rows} row(s) of {run.files} file(s) at {run.data_commit[:12]} with "
            f"version {version}; predictions at {out.repository}@{run.predictions_commit[:12]}"
        )
        meta = _metadata(tracking, spec, version, runtime_of(model), config, source, out, run)
        data_version = dg.DataVersion(f"{run.data_commit[:12]}-v{version}")
        return dg.MaterializeResult(metadata=meta, data_version=data_version)

    return [batch_predictions]
