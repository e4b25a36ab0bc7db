"""Group ``monitoring``: drift between the serving model's training data and what it serves."""

import datetime as dt

import dagster as dg
import pandas as pd
from pydantic import Field

from mlops_assets.defs.keys import deployment_key, drift_report_key, production_performance_key
from mlops_assets.defs.resources import DataStoreResource, LocalFilesResource
from mlops_assets.defs.resources.serving import ServingResource
from mlops_assets.defs.resources.tracking import MlflowResource
from mlops_assets.featurize import SPLIT, build_features
from mlops_assets.monitoring.drift import PREDICTION, DriftInputError, compute_drift
from mlops_assets.monitoring.labels import labels_repository, read_labels
from mlops_assets.monitoring.performance import (
    PerformanceInputError,
    bootstrap_se,
    compare,
    live_score,
)
from mlops_assets.quality import load_dataset
from mlops_assets.serving.client import ServingError
from mlops_assets.serving.predlog import PREFIX, predictions_repository, read_rows
from mlops_assets.specs import ModelSpec
from mlops_assets.store import NotFound
from mlops_assets.training.tracking import PRODUCTION
from mlops_assets.training.train import inputs, predictions


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


def served_rows(store, spec: ModelSpec, version: str, ref: str | None = None):
    """Rows the serving version answered, newest first, from the committed log at ``ref``."""
    if ref is None:
        try:
            ref = store.get_commit("main").id
        except NotFound:
            return
    paths = sorted(store.list(ref, f"{PREFIX}{spec.name}/"))
    for path in reversed(paths):  # newest segments first
        for r in reversed(read_rows(store.get(ref, path))):
            if r["model_version"] == version:
                yield r


def current_window(store, spec: ModelSpec, version: str, rows: int) -> pd.DataFrame:
    """The newest ``rows`` rows the serving version answered, from the committed log."""
    out: list[dict] = []
    for r in served_rows(store, spec, version):
        value = r.get("probability", r.get("prediction"))
        out.append({**r["inputs"], PREDICTION: value, "timestamp": r["timestamp"]})
        if len(out) >= rows:
            break
    return pd.DataFrame(out[::-1])


def labelled_window(store, spec: ModelSpec, version: str, rows: int) -> pd.DataFrame:
    """The newest ``rows`` served rows of ``version`` whose label has arrived, with it."""
    try:
        ref = store.get_commit("main").id
    except NotFound:
        return pd.DataFrame()
    labels = read_labels(store, ref, spec)
    out: list[dict] = []
    for r in served_rows(store, spec, version, ref):
        label = labels.get((str(r["request_id"]), int(r["row"])))
        if label is None:
            continue
        out.append(
            {
                "label": label,
                "prediction": r.get("prediction"),
                "probability": r.get("probability"),
                "timestamp": r["timestamp"],
            }
        )
        if len(out) >= rows:
            break
    return pd.DataFrame(out[::-1])


def serving_version(tracking, spec: ModelSpec, what: str):
    """The registry's ``production`` version: what serves now, and what is monitored."""
    serving = tracking.version_by_alias(spec.model_name, PRODUCTION)
    if serving is None:
        raise dg.Failure(
            f"{spec.model_name!r} has no '{PRODUCTION}' version: nothing serves, nothing "
            f"{what}. Materialize the training group first.",
            allow_retries=False,
        )
    return serving


def push_figures(context, serving: ServingResource, spec: ModelSpec, model_version, **figures):
    """Hand the figures to the inference server, which exports them as gauges for alerting
    (drift share, live score change, model age). Best effort: monitoring never fails on it."""
    created = getattr(model_version, "creation_timestamp", None)
    if created:
        figures["model_created"] = created / 1000.0
    try:
        serving.client().report_monitoring(spec.name, str(model_version.version), **figures)
    except ServingError as e:
        context.log.warning(f"figures not handed to the inference server: {e}")


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


def build_monitoring_assets(spec: ModelSpec) -> list:
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
        serving_model = serving_version(tracking, spec, "to monitor")
        version = serving_model.version
        commit = serving_model.tags.get("lakefs.commit")
        if not commit:
            raise dg.Failure(f"version {version} has no lakefs.commit tag", allow_retries=False)

        # The reference: the training split of exactly the data the serving version learned.
        store = data_store.open(spec.dataset.repository)
        paths = store.list(commit, spec.dataset.prefix)
        dataset, _ = load_dataset({p: store.get(commit, p) for p in paths}, spec.dataset)
        train = build_features(dataset, spec)
        train = train[train[SPLIT] == "train"]
        model = tracking.load_model(spec.model_name, version)
        reference = inputs(train, spec)
        reference[PREDICTION] = predictions(model, train, spec)

        log_store = data_store.open(predictions_repository(spec.dataset.repository))
        current = current_window(log_store, spec, version, config.window_rows)
        meta: dict = {
            "serving_version": version,
            "reference_commit": dg.MetadataValue.text(commit),
            "reference_rows": len(reference),
            "window_rows": len(current),
        }
        if len(current):
            meta["window_start"] = str(current["timestamp"].iloc[0])
            meta["window_end"] = str(current["timestamp"].iloc[-1])
        if len(current) < config.min_rows:
            yield from skipped(
                "drift",
                version,
                meta,
                f"{len(current)} logged row(s) for version {version}, fewer than "
                f"min_rows={config.min_rows}; nothing to compare yet",
            )
            return
        try:
            result = compute_drift(reference, current.drop(columns=["timestamp"]), spec)
        except DriftInputError as e:
            yield from skipped("drift", version, meta, str(e))
            return
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        path = files.write_text(("reports", spec.name, f"drift-{stamp}.html"), result.html)
        pred = result.prediction
        figures = {
            "drift_share": float(result.drift_share),
            "drifted_columns": float(result.drifted_count),
        }
        if result.prediction is not None:
            figures["prediction_drift_score"] = float(result.prediction.score)
        # The report as an MLflow run too: a link the UI can open (browsers refuse file://).
        report_run, report_url = tracking.log_report(
            spec,
            path,
            figures,
            {
                "mlops.kind": "drift_report",
                "mlops.model_version": version,
                "lakefs.commit": commit,
                "dagster.run_id": context.run.run_id,
            },
        )
        meta.update(
            drift_share=float(result.drift_share),
            drifted_columns=int(result.drifted_count),
            columns=dg.MetadataValue.md(result.table()),
            report=dg.MetadataValue.path(str(path)),
        )
        links = {
            "report_url": report_url,
            "report_run_url": report_run,
            "model_version_url": tracking.version_url(spec.model_name, version),
            "mlflow_run_url": tracking.run_url(
                tracking.ensure_experiment(spec), str(serving_model.run_id)
            ),
        }
        meta.update({k: dg.MetadataValue.url(v) for k, v in links.items() if v})
        push_figures(context, serving, spec, serving_model, drift_share=float(result.drift_share))
        if pred is not None:
            meta["prediction_drift_score"] = float(pred.score)
            meta["prediction_drifted"] = pred.drifted
        share = result.drift_share
        severity = (
            dg.AssetCheckSeverity.ERROR
            if share >= config.error_share
            else dg.AssetCheckSeverity.WARN
        )
        passed = share < config.warn_share
        drifted = [c.column for c in result.features if c.drifted]
        description = (
            f"{result.drifted_count} of {len(result.features)} features drifted "
            f"(share {share:.0%}; warn at {config.warn_share:.0%}, error at "
            f"{config.error_share:.0%}){': ' + ', '.join(drifted) if drifted else ''}"
        )
        context.log.info(description)
        summary = {
            "version": version,
            "drift_share": share,
            "drifted": drifted,
            "report": str(path),
            "window_rows": len(current),
        }
        yield dg.Output(summary, metadata=meta)
        yield dg.AssetCheckResult(
            check_name="drift",
            passed=passed,
            severity=severity,
            description=description,
            metadata={
                "drift_share": float(share),
                "drifted_columns": int(result.drifted_count),
                "report": dg.MetadataValue.path(str(path)),
                **({"report_url": dg.MetadataValue.url(report_url)} if report_url else {}),
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
        serving_model = serving_version(tracking, spec, "to score")
        version = serving_model.version
        evaluated = serving_model.tags.get(f"gate.{metric}")
        store = data_store.open(labels_repository(spec))
        window = labelled_window(store, spec, version, config.window_rows)
        meta: dict = {"serving_version": version, "labelled_rows": len(window), "metric": metric}

        if evaluated is None:
            yield from skipped(
                "performance",
                version,
                meta,
                f"version {version} has no gate.{metric} tag: it was never gated",
            )
            return
        if len(window) < config.min_rows:
            yield from skipped(
                "performance",
                version,
                meta,
                f"{len(window)} labelled row(s) for version {version}, fewer than "
                f"min_rows={config.min_rows}; labels arrive later than predictions",
            )
            return
        probability = window["probability"] if window["probability"].notna().all() else None
        try:
            live = live_score(spec, window["label"], window["prediction"], probability)
        except PerformanceInputError as e:
            yield from skipped("performance", version, meta, str(e))
            return
        se = bootstrap_se(spec, window["label"], window["prediction"], probability)
        result = compare(spec, live, float(evaluated), len(window), config.tolerance, se)
        meta.update(
            {
                f"live_{metric}": float(live),
                f"evaluated_{metric}": float(evaluated),
                "relative_change": float(result.relative_change),
                "live_standard_error": float(se),
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
