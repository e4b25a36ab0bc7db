"""Group ``monitoring``: drift between the serving model's training data and what it serves."""

import datetime as dt

import dagster as dg
from pydantic import Field

from mlops_assets.defs.keys import deployment_key, drift_report_key, production_performance_key
from mlops_assets.defs.resources import DataStoreResource, LocalFilesResource
from mlops_assets.defs.resources.serving import ServingResource
from mlops_assets.defs.resources.tracking import MlflowResource, production_version
from mlops_assets.monitoring.drift import DriftInputError, compute_drift, judge, reference_frame
from mlops_assets.monitoring.labels import labels_repository
from mlops_assets.monitoring.performance import PerformanceInputError, assess_window
from mlops_assets.monitoring.windows import current_window, labelled_window
from mlops_assets.serving.predlog import predictions_repository
from mlops_assets.specs import ModelSpec


class DriftConfig(dg.Config):
    window_rows: int = Field(default=1000, ge=1, description="newest logged rows to compare")
    min_rows: int = Field(default=100, ge=1, description="fewest rows worth comparing")
    warn_share: float = Field(
        default=0.3, ge=0, le=1, description="drifted feature share that warns"
    )
    error_share: float = Field(
        default=0.5, ge=0, le=1, description="drifted feature share that fails (ERROR)"
    )


class PerformanceConfig(dg.Config):
    window_rows: int = Field(default=5000, ge=1, description="newest labelled rows to score")
    min_rows: int = Field(default=300, ge=1, description="fewest labelled rows worth scoring")
    tolerance: float = Field(
        default=0.03,
        ge=0,
        lt=1,
        description="band around the evaluated score, relative (0.03 = the roadmap's ±3%)",
    )


def push_figures(context, serving: ServingResource, spec: ModelSpec, model_version, **figures):
    """Hand the figures to every inference-server replica, which export them as gauges for
    alerting (drift share, live score change, model age). Best effort: monitoring never fails
    on it."""
    created = getattr(model_version, "creation_timestamp", None)
    if created:
        figures["model_created"] = created / 1000.0
    for failure in serving.report_monitoring(spec.name, str(model_version.version), **figures):
        context.log.warning(f"figures not handed to the inference server: {failure}")


def skipped(check: str, version: str, meta: dict, reason: str):
    """Outputs of a window that cannot be judged: the reason, and a WARN that never retrains."""
    yield dg.Output({"version": version, "skipped": reason}, metadata={**meta, "skipped": reason})
    yield dg.AssetCheckResult(
        check_name=check,
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"skipped: {reason}",
        metadata={"skipped": True},
    )


def _window_metadata(version: str, commit: str, reference_rows: int, current) -> dict:
    meta: dict = {
        "serving_version": version,
        "reference_commit": dg.MetadataValue.text(commit),
        "reference_rows": reference_rows,
        "window_rows": len(current),
    }
    if len(current):
        meta["window_start"] = str(current["timestamp"].iloc[0])
        meta["window_end"] = str(current["timestamp"].iloc[-1])
    return meta


def _publish_report(context, tracking, files, spec: ModelSpec, model_version, result):
    """The HTML report on disk and as an MLflow run (a link the UI can open: browsers refuse
    file://); returns its path and the links to show."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    path = files.write_text(("reports", spec.name, f"drift-{stamp}.html"), result.html)
    figures = {"drift_share": result.drift_share, "drifted_columns": float(result.drifted_count)}
    if result.prediction is not None:
        figures["prediction_drift_score"] = float(result.prediction.score)
    tags = {
        "mlops.kind": "drift_report",
        "mlops.model_version": model_version.version,
        "lakefs.commit": model_version.tags.get("lakefs.commit", ""),
        "dagster.run_id": context.run.run_id,
    }
    report_run, report_url = tracking.log_report(spec, path, figures, tags)
    links = {
        "report_url": report_url,
        "report_run_url": report_run,
        "model_version_url": tracking.version_url(spec.model_name, model_version.version),
        "mlflow_run_url": tracking.run_url(
            tracking.ensure_experiment(spec), str(model_version.run_id)
        ),
    }
    return path, {k: dg.MetadataValue.url(v) for k, v in links.items() if v}


def _drift_metadata(result, path, links: dict) -> dict:
    meta = {
        "drift_share": float(result.drift_share),
        "drifted_columns": int(result.drifted_count),
        "columns": dg.MetadataValue.md(result.table()),
        "report": dg.MetadataValue.path(str(path)),
        **links,
    }
    if result.prediction is not None:
        meta["prediction_drift_score"] = float(result.prediction.score)
        meta["prediction_drifted"] = result.prediction.drifted
    if result.probabilities:  # multiclass: P(class) of each class, compared on its own
        meta["probabilities_drifted"] = sum(c.drifted for c in result.probabilities)
    return meta


def build_monitoring_assets(spec: ModelSpec) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=drift_report_key(spec.name),
        deps=[deployment_key(spec.name)],
        group_name="monitoring",
        kinds={"evidently"},
        io_manager_key="json_io_manager",
        description=(
            f"Evidently drift of what '{spec.name}' serves against the training data of the "
            "serving version."
        ),
        check_specs=[
            dg.AssetCheckSpec(
                name="drift",
                asset=drift_report_key(spec.name),
                description="Share of drifted features under the warn/error thresholds.",
            )
        ],
    )
    def drift_report(
        context: dg.AssetExecutionContext,
        config: DriftConfig,
        data_store: DataStoreResource,
        mlflow: MlflowResource,
        files: LocalFilesResource,
        serving: ServingResource,
    ):
        tracking = mlflow.tracking()
        model_version = production_version(tracking, spec, "to monitor")
        version, commit = model_version.version, model_version.tags.get("lakefs.commit")
        if not commit:
            raise dg.Failure(f"version {version} has no lakefs.commit tag", allow_retries=False)
        from mlops_assets.training.pipeline import spec_types

        model = tracking.load_model(spec.model_name, version, spec_types(spec))
        reference = reference_frame(data_store.open(spec.dataset.repository), spec, commit, model)
        log_store = data_store.open(predictions_repository(spec.dataset.repository))
        current = current_window(log_store, spec, version, config.window_rows)
        meta = _window_metadata(version, commit, len(reference), current)
        if len(current) < config.min_rows:
            reason = (
                f"{len(current)} logged row(s) for version {version}, fewer than "
                f"min_rows={config.min_rows}; nothing to compare yet"
            )
            yield from skipped("drift", version, meta, reason)
            return
        try:
            result = compute_drift(reference, current.drop(columns=["timestamp"]), spec)
        except DriftInputError as e:
            yield from skipped("drift", version, meta, str(e))
            return
        verdict = judge(result, config.warn_share, config.error_share)
        path, links = _publish_report(context, tracking, files, spec, model_version, result)
        meta.update(_drift_metadata(result, path, links))
        push_figures(context, serving, spec, model_version, drift_share=result.drift_share)
        context.log.info(verdict.description)
        summary = {
            "version": version,
            "drift_share": result.drift_share,
            "drifted": verdict.drifted,
            "report": str(path),
            "window_rows": len(current),
        }
        yield dg.Output(summary, metadata=meta)
        yield dg.AssetCheckResult(
            check_name="drift",
            passed=verdict.passed,
            severity=dg.AssetCheckSeverity.ERROR if verdict.error else dg.AssetCheckSeverity.WARN,
            description=verdict.description,
            metadata={
                "drift_share": float(result.drift_share),
                "drifted_columns": int(result.drifted_count),
                "report": dg.MetadataValue.path(str(path)),
                **({"report_url": links["report_url"]} if "report_url" in links else {}),
                "serving_version": version,
                "skipped": False,
            },
        )

    @dg.asset(
        key=production_performance_key(spec.name),
        deps=[deployment_key(spec.name)],
        group_name="monitoring",
        kinds={"scikit-learn"},
        io_manager_key="json_io_manager",
        description=(
            f"Live {spec.evaluation.metric} of the serving '{spec.name}' version on the labels "
            "that arrived, against its evaluation."
        ),
        check_specs=[
            dg.AssetCheckSpec(
                name="performance",
                asset=production_performance_key(spec.name),
                description="Live score within the band around the evaluated score.",
            )
        ],
    )
    def production_performance(
        context: dg.AssetExecutionContext,
        config: PerformanceConfig,
        data_store: DataStoreResource,
        mlflow: MlflowResource,
        serving: ServingResource,
    ):
        tracking = mlflow.tracking()
        metric = spec.evaluation.metric
        serving_model = production_version(tracking, spec, "to score")
        version = serving_model.version
        gated = serving_model.tags.get(f"gate.{metric}")
        store = data_store.open(labels_repository(spec))
        window = labelled_window(store, spec, version, config.window_rows)
        meta: dict = {"serving_version": version, "labelled_rows": len(window), "metric": metric}
        try:
            evaluated = float(gated) if gated is not None else None
            result = assess_window(
                spec, window, evaluated, version, config.min_rows, config.tolerance
            )
        except PerformanceInputError as e:
            yield from skipped("performance", version, meta, str(e))
            return
        live, evaluated = result.live, result.expected
        meta.update(
            {
                f"live_{metric}": float(live),
                f"evaluated_{metric}": float(evaluated),
                "relative_change": float(result.relative_change),
                "live_standard_error": float(result.se),
                "window_start": str(window["timestamp"].iloc[0]),
                "window_end": str(window["timestamp"].iloc[-1]),
            }
        )
        description = result.describe()
        context.log.info(description)
        push_figures(
            context, serving, spec, serving_model, live_score_change=float(result.relative_change)
        )
        yield dg.Output(
            {"version": version, "metric": metric, "live": live, "evaluated": float(evaluated)},
            metadata=meta,
        )
        yield dg.AssetCheckResult(
            check_name="performance",
            passed=not (result.below_band or result.better),
            severity=dg.AssetCheckSeverity.ERROR if result.worse else dg.AssetCheckSeverity.WARN,
            description=description,
            metadata={
                f"live_{metric}": float(live),
                f"evaluated_{metric}": float(evaluated),
                "relative_change": float(result.relative_change),
                "labelled_rows": len(window),
                "serving_version": version,
                "skipped": False,
            },
        )

    return [drift_report, production_performance]
