"""One training run, the same everywhere: the Dagster asset, ``mlflow run . -e train`` and the
reproduction of a registered version all call ``train_and_log``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlops_assets.featurize import REVISION as FEATURES_REVISION
from mlops_assets.featurize import SPLIT
from mlops_assets.specs import Hyperparameters, ModelSpec
from mlops_assets.training import lineage, onnx_export
from mlops_assets.training.tracking import (
    MODEL_ARTIFACT,
    Tracking,
    log_model,
    log_model_file,
    model_bytes,
)
from mlops_assets.training.train import Trained, fit, inputs

if TYPE_CHECKING:
    import pandas as pd

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
    model_id: str = ""  # the MLflow 3 LoggedModel


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


MODEL_CARD = "model_card.md"


def data_uri(spec: ModelSpec, tags: dict[str, str]) -> str:
    """The lakeFS URI of the data a run learned from: its repository, commit and prefix."""
    return lineage.lakefs_uri(tags["lakefs.repository"], tags["lakefs.commit"], spec.dataset.prefix)


def train_and_log(
    tracking: Tracking,
    spec: ModelSpec,
    features: pd.DataFrame,
    params: Hyperparameters,
    tags: dict[str, str],
) -> Logged:
    """Fit, then log to the ACTIVE run: params and lineage tags, the train and holdout splits
    as dataset inputs whose source is the lakeFS commit, the skops model (with its ONNX graph
    beside it when it converts, tagged either way; the gate checks its parity before it may
    serve), the holdout metrics linked to the logged model, and the model card."""
    import mlflow
    from mlflow.entities import Param, RunTag

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("train_and_log needs an active MLflow run: start one first")
    run_id = run.info.run_id
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
    params_logged = {
        **{f"model.{k}": v for k, v in params.model_dump().items()},
        "train_rows": trained.train_rows,
        "holdout_rows": trained.holdout_rows,
    }
    if trained.threshold is not None:
        params_logged["decision_threshold"] = trained.threshold
    uri = data_uri(spec, tags)
    train_set, holdout_set = (
        lineage.lakefs_dataset(
            features.loc[features[SPLIT] == part, [*spec.features, spec.target]],
            uri,
            f"{spec.name}-{part}@{tags['lakefs.commit'][:12]}",
            spec.target,
        )
        for part in ("train", "holdout")
    )
    card = lineage.model_card(
        spec,
        data={
            "repository": tags["lakefs.repository"],
            "commit": tags["lakefs.commit"],
            "branch": tags.get("lakefs.branch", "main"),
            "uri": uri,
        },
        train_rows=trained.train_rows,
        holdout_rows=trained.holdout_rows,
        metrics=trained.metrics,
        run={
            "mlflow run": run_id,
            "run hash": all_tags["mlops.run_hash"],
            "code version": all_tags["mlops.code_version"],
            "model digest": digest,
        },
        threshold=trained.threshold,
        threshold_rule=trained.threshold_rule,
    )

    def log(client):
        # One request for every param and tag; then the datasets, the model, and the metrics
        # linked to the logged model and the holdout they were measured on (so the LoggedModel
        # page shows them; logged before log_model, MLflow would re-read the run's metric
        # histories to link them).
        client.log_batch(
            run_id,
            params=[Param(k, str(v)) for k, v in params_logged.items()],
            tags=[RunTag(k, str(v)) for k, v in all_tags.items()],
        )
        mlflow.log_inputs(
            datasets=[train_set, holdout_set],
            contexts=["training", "evaluation"],
            tags_list=[None, None],
        )
        info = log_model(trained.pipeline, example, answers, trusted)
        mlflow.log_metrics(
            {f"holdout_{k}": v for k, v in trained.metrics.items()},
            model_id=info.model_id,
            dataset=holdout_set,
        )
        if conversion.data is not None:
            onnx_export.log_onnx(tracking, info.model_id, conversion.data)
        log_model_file(tracking, info.model_id, MODEL_CARD, card)
        return info

    info = tracking.call(f"log run {run_id}", log)
    return Logged(
        trained=trained,
        run_id=run_id,
        experiment_id=run.info.experiment_id,
        model_uri=info.model_uri or f"runs:/{run_id}/{MODEL_ARTIFACT}",
        run_hash=all_tags["mlops.run_hash"],
        model_digest=digest,
        tags=all_tags,
        model_id=info.model_id,
    )
