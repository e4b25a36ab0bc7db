"""One training run, the same everywhere: the Dagster asset, ``mlflow run . -e train`` and the
reproduction of a registered version all call ``train_and_log``."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from mlops_assets.featurize import REVISION as FEATURES_REVISION
from mlops_assets.specs import Hyperparameters, ModelSpec
from mlops_assets.training import lineage, onnx_export
from mlops_assets.training.tracking import MODEL_ARTIFACT, Tracking, log_model, model_bytes
from mlops_assets.training.train import Trained, fit, inputs

# A readable revision; the code version also carries a digest of the source that decides the
# model (feature building, pipeline, fit), so an edit there changes the run hash even if
# nobody bumps this.
TRAINING_REVISION = "train-1"
MODEL_SOURCES = (
    "mlops_assets.featurize",
    "mlops_assets.training.pipeline",
    "mlops_assets.training.train",
)
EXAMPLE_ROWS = 5


def code_version(spec: ModelSpec) -> str:
    """The training code version: logic revision plus the spec (without its gate section)."""
    digest = spec.digest(exclude={"description", "evaluation", "freshness"})
    source = lineage.source_digest(MODEL_SOURCES)
    return f"{TRAINING_REVISION}+{FEATURES_REVISION}-{digest}-{source}"


@dataclass(frozen=True)
class Logged:
    trained: Trained
    run_id: str
    experiment_id: str
    model_uri: str
    run_hash: str
    model_digest: str
    tags: dict[str, str]


def lineage_tags(
    spec: ModelSpec,
    params: Hyperparameters,
    data_commit: str,
    data_repository: str,
    extra: dict[str, str] | None = None,
    data_ref: str = "main",
) -> dict[str, str]:
    """What a run and its registered version carry so anyone can trace and repeat them."""
    libs = lineage.library_versions()
    version = code_version(spec)
    tags = {
        "mlops.spec": spec.name,
        "mlops.task": spec.task,
        "lakefs.repository": data_repository,
        "lakefs.commit": data_commit,
        "lakefs.branch": data_ref,
        "mlops.code_version": version,
        "mlops.run_hash": lineage.run_hash(data_commit, version, params.model_dump(), libs),
        "mlops.params": json.dumps(params.model_dump(), sort_keys=True),
        **{f"lib.{k}": v for k, v in libs.items()},
    }
    tags.update(extra or {})
    return tags


def threshold_tags(trained: Trained) -> dict[str, str]:
    """A classifier's decision threshold and how it was chosen, as run and version tags (the
    model itself carries the threshold; these make it visible in the registry)."""
    if trained.threshold is None:
        return {}
    return {
        "mlops.decision_threshold": f"{trained.threshold:g}",
        "mlops.threshold_rule": trained.threshold_rule,
    }


def train_and_log(
    tracking: Tracking,
    spec: ModelSpec,
    features: pd.DataFrame,
    params: Hyperparameters,
    tags: dict[str, str],
) -> Logged:
    """Fit, then log params, metrics, lineage tags and the skops model to the ACTIVE run, with
    the model's ONNX graph beside it when it converts (tagged either way; the gate checks its
    parity before it may serve)."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("train_and_log needs an active MLflow run: start one first")
    trained = fit(features, spec, params)
    blob, trusted = model_bytes(trained.pipeline)
    digest = lineage.model_digest(blob)
    conversion = onnx_export.convert(trained.pipeline, spec)
    all_tags = {
        **tags,
        "mlops.model_digest": digest,
        **threshold_tags(trained),
        **conversion.tags(),
    }
    example = inputs(features.head(EXAMPLE_ROWS), spec)
    # what the logged model's pyfunc predict() returns: labels for a classifier
    answers = trained.pipeline.predict(example)

    def log(_):
        mlflow.log_params({f"model.{k}": v for k, v in params.model_dump().items()})
        mlflow.log_params({"train_rows": trained.train_rows, "holdout_rows": trained.holdout_rows})
        if trained.threshold is not None:
            mlflow.log_param("decision_threshold", trained.threshold)
        mlflow.log_metrics({f"holdout_{k}": v for k, v in trained.metrics.items()})
        mlflow.set_tags(all_tags)
        info = log_model(trained.pipeline, example, answers, trusted)
        if conversion.data is not None:
            onnx_export.log_onnx(tracking, info.model_id, conversion.data)
        return info

    info = tracking.call(f"log run {run.info.run_id}", log)
    return Logged(
        trained=trained,
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        model_uri=info.model_uri or f"runs:/{run.info.run_id}/{MODEL_ARTIFACT}",
        run_hash=all_tags["mlops.run_hash"],
        model_digest=digest,
        tags=all_tags,
    )
