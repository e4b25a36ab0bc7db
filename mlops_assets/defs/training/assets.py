"""Group ``training``: a trained, registered model and the gate that decides whether it may
replace the champion."""

from typing import TYPE_CHECKING, Any, Literal, TypeAlias, get_origin

import dagster as dg
from pydantic import Field, ValidationError, create_model

from mlops_assets.defs.conditions import LOOP, freshness_policy
from mlops_assets.defs.k8s import TRAINING_K8S_TAGS
from mlops_assets.defs.keys import features_key, model_evaluation_key, trained_model_key
from mlops_assets.defs.metadata import MetadataEntry
from mlops_assets.defs.resources import DataStoreResource
from mlops_assets.defs.resources.tracking import MlflowResource
from mlops_assets.defs.runs import run_or_latest_metadata
from mlops_assets.specs import EvaluationSpec, Hyperparameters, ModelSpec
from mlops_assets.specs.model import check_estimator_override, validation_problems
from mlops_assets.training import gate, onnx_export
from mlops_assets.training.evaluate import Evaluation, evaluate
from mlops_assets.training.history import FIRST_MODEL, AuditTrail, Entry, audit_repository
from mlops_assets.training.run import Logged, code_version, data_uri, lineage_tags, train_and_log
from mlops_assets.training.tracking import (
    PRODUCTION,
    Tracking,
    register,
)
from mlops_assets.training.train import TrainingError, split


def _problems(e: ValidationError) -> str:
    return validation_problems(e, "field")


def _url(meta: dict, name: str, url: str) -> None:
    if url:
        meta[name] = dg.MetadataValue.url(url)


def train_config_class(spec: ModelSpec) -> type[dg.Config]:
    """Hyperparameters as run config, generated from ``Hyperparameters`` (defined once) with
    this spec's values as the launchpad defaults. Choices and bounds are checked by
    ``Hyperparameters`` before training, so a wrong value is refused with its field named."""
    fields: dict[str, Any] = {
        name: (
            str if get_origin(field.annotation) is Literal else field.annotation,
            Field(default=getattr(spec.model, name), description=field.description),
        )
        for name, field in Hyperparameters.model_fields.items()
    }
    name = f"{spec.name.title().replace('_', '')}TrainConfig"
    return create_model(name, __base__=dg.Config, **fields)


class GateConfig(dg.Config):
    """The promotion gate's thresholds; ``gate_config_class`` gives them a spec's defaults.
    They may only be tightened here: a looser value is refused before training."""

    floor: float
    tolerance: float


def gate_config_class(spec: ModelSpec) -> type[GateConfig]:
    e = spec.evaluation

    class SpecGateConfig(GateConfig):
        floor: float = Field(
            default=e.floor,
            description=f"{e.metric}: "
            + ("lowest acceptable value" if e.higher_is_better else "highest acceptable value")
            + f"; the reviewed spec's is {e.floor:g}, run config may only "
            + ("raise it" if e.higher_is_better else "lower it"),
        )
        tolerance: float = Field(
            default=e.tolerance,
            description="how much worse than the champion a challenger may be (0.03 = 3%); "
            f"the reviewed spec's is {e.tolerance:g}, run config may only make it smaller",
        )

    SpecGateConfig.__name__ = f"{spec.name.title().replace('_', '')}GateConfig"
    return SpecGateConfig


def applied_thresholds(
    spec: ModelSpec, floor: float | None, tolerance: float | None, where: str
) -> gate.Thresholds:
    """The gate's thresholds: the reviewed spec's, or stricter ones from run config; a looser
    request fails the step without retries, naming the field."""
    try:
        return gate.thresholds(spec.name, spec.evaluation, floor, tolerance, where)
    except gate.GateLoosened as e:
        raise dg.Failure(str(e), allow_retries=False) from None


def refuse_a_loosened_gate(context: dg.AssetExecutionContext, spec: ModelSpec) -> None:
    """Before training: a run whose gate config is looser than the spec's stops here, so no
    model is trained, logged or registered for a gate nobody reviewed."""
    key = model_evaluation_key(spec.name)
    ops = (context.run.run_config or {}).get("ops")
    step = ops.get(key.to_python_identifier()) if isinstance(ops, dict) else None
    config = (step.get("config") if isinstance(step, dict) else None) or {}
    if "floor" in config or "tolerance" in config:
        where = f"run config of {key.to_user_string()} (checked before training)"
        applied_thresholds(spec, config.get("floor"), config.get("tolerance"), where)


def _trained_outputs(
    tracking: Tracking,
    spec: ModelSpec,
    version: str,
    logged: Logged,
    params: Hyperparameters,
) -> tuple[dict, dict[str, MetadataEntry]]:
    """What ``trained_model`` stores (the version and its lineage) and shows in the UI."""
    name = spec.model_name
    commit = logged.tags["lakefs.commit"]
    value = {
        "model_name": name,
        "version": version,
        "run_id": logged.run_id,
        "experiment_id": logged.experiment_id,
        "model_uri": f"models:/{name}/{version}",
        "run_hash": logged.run_hash,
        "model_digest": logged.model_digest,
        "lakefs_commit": commit,
        "metrics": logged.trained.metrics,
        "params": params.model_dump(),
        "decision_threshold": logged.trained.threshold,
    }
    meta: dict = {
        **{k: float(v) for k, v in logged.trained.metrics.items()},
        "registered_model": name,
        "model_version": dg.MetadataValue.int(int(version)),
        "model_uri": value["model_uri"],
        "mlflow_run_id": logged.run_id,
        "run_hash": logged.run_hash,
        "model_digest": logged.model_digest,
        "lakefs_commit": dg.MetadataValue.text(commit),
        "lakefs_branch": logged.tags["lakefs.branch"],
        "training_data": data_uri(spec, logged.tags),  # the source of the MLflow dataset inputs
        "mlflow_model_id": logged.model_id,
        "train_rows": logged.trained.train_rows,
        "holdout_rows": logged.trained.holdout_rows,
        "params": dg.MetadataValue.json(params.model_dump()),
        "tracking_uri": tracking.tracking_uri,
    }
    if logged.trained.threshold is not None:
        meta["decision_threshold"] = dg.MetadataValue.float(logged.trained.threshold)
        meta["threshold_rule"] = logged.trained.threshold_rule
    value["onnx_conversion"] = meta["onnx_conversion"] = logged.tags.get(
        onnx_export.TAG_CONVERSION, "not attempted"
    )
    if onnx_export.TAG_CONVERSION_REASON in logged.tags:
        meta["onnx_conversion_reason"] = logged.tags[onnx_export.TAG_CONVERSION_REASON]
    _url(meta, "mlflow_run_url", tracking.run_url(logged.experiment_id, logged.run_id))
    _url(meta, "model_version_url", tracking.version_url(name, version))
    return value, meta


def _evaluation_outputs(
    tracking: Tracking,
    name: str,
    ev: Evaluation,
    gate_spec: EvaluationSpec | gate.Thresholds,
    trained_model: dict,
) -> tuple[dict, dict[str, MetadataEntry]]:
    """What ``model_evaluation`` stores (the decision) and shows in the UI (both scores, the
    bar, the thresholds that applied, links to both versions)."""
    version, champion, decision, metric = (
        ev.version,
        ev.champion_version,
        ev.decision,
        gate_spec.metric,
    )
    value = {
        "model_name": name,
        "challenger_version": version,
        "champion_version": champion,
        "decision": ev.verdict,
        "reason": decision.reason,
        "metric": metric,
        "challenger": ev.challenger_scores,
        "champion": ev.champion_scores,
        "aliases_moved": ev.aliases_moved,
    }
    challenger_score = float(ev.challenger_scores[metric])
    meta: dict = {
        "decision": ev.verdict,
        "reason": decision.reason,
        "metric": metric,
        f"challenger_{metric}": challenger_score,
        "floor": float(gate_spec.floor),
        "tolerance": float(gate_spec.tolerance),
        "bar": float(decision.bar),
        "challenger_version": dg.MetadataValue.int(int(version)),
        "champion_version": champion or "none",
        "aliases_moved": ", ".join(ev.aliases_moved) or "none",
        "scores": dg.MetadataValue.md(ev.table()),
    }
    if trained_model.get("decision_threshold") is not None:
        # label metrics (accuracy, F1) are at the threshold each version carries
        meta["challenger_threshold"] = float(trained_model["decision_threshold"])
    if ev.champion_scores:
        meta[f"champion_{metric}"] = float(ev.champion_scores[metric])
    if ev.parity is not None:  # compiled inference: what serves this version, and why
        value["onnx_parity"] = meta["onnx_parity"] = ev.parity.status
        value["serving_runtime"] = meta["serving_runtime"] = ev.parity.runtime
        meta["onnx_parity_reason"] = ev.parity.reason
        if ev.parity.max_abs_diff is not None:
            meta["onnx_max_abs_diff"] = dg.MetadataValue.float(ev.parity.max_abs_diff)
    _url(meta, "challenger_url", tracking.version_url(name, version))
    if champion:
        _url(meta, "champion_url", tracking.version_url(name, champion))
    return value, meta


def build_training_assets(spec: ModelSpec) -> list[dg.AssetsDefinition]:
    # Dagster reads the `config` annotation when the asset is defined and builds the launchpad
    # schema from that class, so it must be the spec's own class (its defaults are the spec's
    # values). A type checker cannot use a class made at run time as an annotation: it checks
    # against the base class, which declares every field the body reads.
    if TYPE_CHECKING:
        TrainConfig: TypeAlias = dg.Config
        SpecGateConfig: TypeAlias = GateConfig
    else:
        TrainConfig = train_config_class(spec)
        SpecGateConfig = gate_config_class(spec)
    name = spec.model_name
    metric = spec.evaluation.metric

    @dg.asset(
        key=trained_model_key(spec.name),
        automation_condition=LOOP,
        ins={"features": dg.AssetIn(key=features_key(spec.name))},
        group_name="training",
        kinds={"mlflow", "scikit-learn"},
        io_manager_key="json_io_manager",
        code_version=code_version(spec),
        freshness_policy=freshness_policy(spec.freshness.model_max_age_hours, spec),
        op_tags=TRAINING_K8S_TAGS,
        description=f"'{name}' fit on the features of one lakeFS commit; MLflow run and version.",
    )
    def trained_model(
        context: dg.AssetExecutionContext,
        config: TrainConfig,
        features,  # a pandas DataFrame; annotated, it would make loading the defs import pandas
        mlflow: MlflowResource,
    ) -> dg.Output:
        refuse_a_loosened_gate(context, spec)
        try:
            check_estimator_override(spec, config.model_dump()["estimator"])
            params = Hyperparameters.model_validate(config.model_dump())
        except ValueError as e:  # pydantic's ValidationError is one too
            raise dg.Failure(
                f"{context.asset_key.to_user_string()} config rejected before training: "
                f"{_problems(e) if isinstance(e, ValidationError) else e}",
                allow_retries=False,
            ) from None
        commit = features.attrs.get("lakefs_commit")
        if not commit or commit == "unknown":
            raise dg.Failure(
                f"features of {spec.name!r} carry no lakeFS commit: re-materialize "
                f"{features_key(spec.name).to_user_string()}",
                allow_retries=False,
            )
        tracking = mlflow.tracking()
        tags = lineage_tags(
            spec,
            params,
            commit,
            features.attrs.get("lakefs_repository", spec.dataset.repository),
            extra={
                "dagster.run_id": context.run.run_id,
                "dagster.asset_key": context.asset_key.to_user_string(),
            },
            data_ref=features.attrs.get("lakefs_ref", "main"),
        )
        run_name = f"{spec.name}-{context.run.run_id[:8]}"
        with mlflow.start_run(context, tracking, spec, run_name, tags):
            try:
                logged = train_and_log(tracking, spec, features, params, tags)
            except TrainingError as e:
                raise dg.Failure(str(e), allow_retries=False) from None
            context.log.info(f"MLflow run {logged.run_id}: {logged.trained.metrics}")
        # Registered only once the run is complete: a failure above registers nothing.
        version = register(
            tracking,
            name,
            logged.model_uri,
            logged.run_id,
            {**logged.tags, "mlflow.run_id": logged.run_id},
        )
        context.log.info(f"registered {name!r} version {version.version}")
        value, meta = _trained_outputs(tracking, spec, str(version.version), logged, params)
        return dg.Output(value, data_version=dg.DataVersion(logged.run_hash), metadata=meta)

    @dg.asset(
        key=model_evaluation_key(spec.name),
        automation_condition=LOOP,
        ins={
            "trained_model": dg.AssetIn(key=trained_model_key(spec.name)),
            "features": dg.AssetIn(key=features_key(spec.name)),
        },
        group_name="training",
        kinds={"mlflow", "scikit-learn"},
        io_manager_key="json_io_manager",
        code_version="evaluation-2",  # 2: the ONNX parity check
        # One gate at a time per model: two concurrent evaluations could otherwise both see
        # "no champion" and both take production (limit set in dagster.yaml).
        pool=f"mlops_gate_{spec.name}",
        description=f"Challenger vs the '{PRODUCTION}' champion of '{name}' on one holdout.",
        check_specs=[
            dg.AssetCheckSpec(
                name="promotion_gate",
                asset=model_evaluation_key(spec.name),
                blocking=True,
                description=(
                    f"The challenger clears the {metric} floor and is no worse than the champion "
                    "by more than the tolerance; only then does it get an alias."
                ),
            )
        ],
    )
    def model_evaluation(
        context: dg.AssetExecutionContext,
        config: SpecGateConfig,
        trained_model: dict,
        features,  # a pandas DataFrame; annotated, it would make loading the defs import pandas
        mlflow: MlflowResource,
        data_store: DataStoreResource,
    ):
        key = context.asset_key.to_user_string()
        gate_spec = applied_thresholds(spec, config.floor, config.tolerance, f"run config of {key}")
        tracking = mlflow.tracking()
        x, y = split(features, spec, "holdout")
        # The version THIS run trained (a concurrent run may have rewritten the shared file).
        trained = run_or_latest_metadata(context, trained_model_key(spec.name)) or {}
        version = str(trained.get("model_version") or trained_model["version"])
        trigger = context.run.tags.get("mlops/trigger", "manual launch")

        def first_production(ev: Evaluation) -> None:
            d = ev.decision
            trail = AuditTrail(
                data_store.open(audit_repository(spec.dataset.repository)), spec.model_name
            )
            trail.append(
                Entry(
                    spec.model_name, FIRST_MODEL, None, ev.version, trigger, d.reason,
                    run_id=context.run.run_id, actor=context.run.tags.get("dagster/user", ""),
                    evidence={"gate": {"metric": d.metric, "challenger": d.challenger,
                                       "bar": d.bar, **gate_spec.as_dict()}},
                )
            )  # fmt: skip

        ev = evaluate(
            tracking, spec, version, x, y, gate_spec, f"Materialize {key} again",
            extra_tags={"gate.dagster_run_id": context.run.run_id, "gate.trigger": trigger},
            on_first_production=first_production,
        )  # fmt: skip
        decision = ev.decision
        context.log.info(f"promotion gate {ev.verdict}: {decision.reason}")
        context.log.info(f"thresholds applied: {gate_spec.describe()}")
        value, meta = _evaluation_outputs(tracking, name, ev, gate_spec, trained_model)
        value["thresholds"] = gate_spec.as_dict()
        meta["thresholds"] = gate_spec.describe()
        meta["floor_source"] = gate_spec.floor_source
        meta["tolerance_source"] = gate_spec.tolerance_source
        meta["dagster_run_id"] = context.run.run_id
        yield dg.Output(value, metadata=meta)
        yield dg.AssetCheckResult(
            check_name="promotion_gate",
            passed=decision.promote,
            severity=dg.AssetCheckSeverity.ERROR,
            description=decision.reason,
            metadata={
                "challenger_version": version,
                f"challenger_{metric}": meta[f"challenger_{metric}"],
                f"champion_{metric}": meta.get(f"champion_{metric}", -1.0),
                "bar": float(decision.bar),
            },
        )

    return [trained_model, model_evaluation]
