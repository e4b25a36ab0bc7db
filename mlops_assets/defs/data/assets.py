"""Group ``data``: the lakeFS commit on main (raw_data) and the validated dataset read at it."""

from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from mlops_assets.defs.conditions import LOOP, freshness_policy
from mlops_assets.defs.keys import dataset_key, raw_data_key
from mlops_assets.defs.metadata import (
    MetadataEntry,
    commit_metadata,
    frame_metadata,
    latest_data_version,
    spec_version,
)
from mlops_assets.defs.resources import DataStoreResource
from mlops_assets.ingest import IngestResult
from mlops_assets.quality import CHECKS, read_dataset
from mlops_assets.specs import ModelSpec
from mlops_assets.store import NotFound, VersionedStore

CHECK_DESCRIPTIONS = {
    "schema": "Every batch is UTF-8 CSV with exactly the spec's columns and dtypes.",
    "nulls": "No missing values in columns the spec marks non-nullable.",
    "ranges": "Numeric values within [min, max]; categories within the allowed values.",
    "row_count": "At least the spec's min_rows rows.",
    "duplicate_keys": "The key column is unique across all batches.",
}


def report_ingest_audit(instance: dg.DagsterInstance, result: IngestResult) -> None:
    """Record a write-audit-publish outcome on the instance (used by the ``mlops`` CLI)."""
    key = raw_data_key(result.spec)
    metadata: dict[str, MetadataEntry] = {
        "file": result.path,
        "ingest_branch": result.branch,
        "ingest_commit": result.ingest_commit,
        "main_commit": result.main_commit,
        "rows": result.rows,
        "published": result.published,
    }
    if result.violations:
        metadata["violations"] = dg.MetadataValue.md(
            "| file | column | rule | detail |\n|---|---|---|---|\n"
            + "\n".join(
                f"| {v.file} | {v.column or ''} | {v.rule} | {v.detail} |"
                for v in result.violations
            )
        )
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=key,
            check_name="ingest_audit",
            passed=result.published,
            severity=dg.AssetCheckSeverity.ERROR,
            description=result.summary()[:2000],
            metadata=metadata,
        )
    )
    if result.published:
        report_main_commit(
            instance, result.spec, result.main_commit, {"published_file": result.path}
        )


def report_main_commit(
    instance: dg.DagsterInstance, spec_name: str, commit_id: str, metadata: dict[str, str]
) -> None:
    """Record that main is at ``commit_id``: an observation of raw_data with that data version."""
    instance.report_runless_asset_event(
        dg.AssetObservation(
            asset_key=raw_data_key(spec_name),
            tags={"dagster/data_version": commit_id},
            metadata={"lakefs_commit": commit_id, **metadata},
        )
    )


def missing_repository(spec: ModelSpec, store: VersionedStore) -> str | None:
    """Why the spec's repository cannot be read (it does not exist yet), or None. Nothing in the
    Dagster layer ever creates or seeds one: data arrives through ingestion."""
    try:
        store.head("main")
    except NotFound:
        return (
            f"no repository {spec.dataset.repository!r} in {store.describe()}: ingest data "
            f"first: `mlops seed` (the demo data) or `mlops ingest {spec.name} --file your.csv`"
        )
    return None


def open_repository(data_store: DataStoreResource, spec: ModelSpec) -> VersionedStore:
    """The spec's repository; a missing one fails with what to run."""
    store = data_store.open(spec.dataset.repository)
    if why := missing_repository(spec, store):
        raise dg.Failure(why, allow_retries=False)
    return store


class DatasetConfig(dg.Config):
    ref: str = Field(
        default="",
        description=(
            "Commit id, tag or branch to read. Empty: the commit Dagster last observed on "
            "raw_data (main's head if it was never observed). Set a commit id to reproduce."
        ),
    )


def build_data_assets(spec: ModelSpec) -> list[dg.AssetsDefinition | dg.SourceAsset]:
    repo = spec.dataset.repository

    @dg.observable_source_asset(
        key=raw_data_key(spec.name),
        group_name="data",
        description=f"Head of main in lakeFS repository '{repo}': its commit is the data version.",
        tags={"dagster/kind/lakefs": ""},
    )
    def raw_data(context, data_store: DataStoreResource) -> dg.ObserveResult:
        store = open_repository(data_store, spec)
        commit = store.get_commit("main")
        files = store.list(commit.id, spec.dataset.prefix)
        return dg.ObserveResult(
            data_version=dg.DataVersion(commit.id),
            metadata={**commit_metadata(store, commit, "main"), "batch_files": len(files)},
        )

    @dg.asset_check(
        asset=raw_data_key(spec.name),
        name="ingest_audit",
        description=(
            "Write-audit-publish audit. `mlops ingest` records one evaluation per batch (a "
            "failure names file, column and rule; the batch stays on its ingest branch). "
            "Running it here re-audits every batch on main."
        ),
    )
    def ingest_audit(data_store: DataStoreResource) -> dg.AssetCheckResult:
        store = data_store.open(repo)
        commit = store.get_commit("main")
        _, violations, files = read_dataset(store, spec.dataset, commit.id)
        return dg.AssetCheckResult(
            passed=not violations,
            description="; ".join(map(str, violations))[:2000] or "all batches on main pass",
            metadata={"lakefs_commit": commit.id, "files": files},
        )

    @dg.asset(
        key=dataset_key(spec.name),
        automation_condition=LOOP,
        deps=[raw_data_key(spec.name)],
        group_name="data",
        kinds={"lakefs", "pandas"},
        code_version=spec_version(spec, "dataset-1"),
        freshness_policy=freshness_policy(spec.freshness.dataset_max_age_hours, spec),
        description=f"Validated snapshot of '{repo}' read at exactly the recorded lakeFS commit.",
        check_specs=[
            dg.AssetCheckSpec(
                name=c,
                asset=dataset_key(spec.name),
                blocking=True,
                description=CHECK_DESCRIPTIONS[c],
            )
            for c in CHECKS
        ],
    )
    def dataset(
        context: dg.AssetExecutionContext, config: DatasetConfig, data_store: DataStoreResource
    ) -> Iterator:
        store = open_repository(data_store, spec)
        ref = config.ref or latest_data_version(context.instance, raw_data_key(spec.name))
        if ref is None:
            ref = "main"
            context.log.warning(
                f"raw_data of {spec.name!r} was never observed: reading main's head"
            )
        # Resolve once; every read below uses the immutable commit id, never a branch name.
        commit = store.get_commit(ref)
        df, violations, files = read_dataset(store, spec.dataset, commit.id)
        context.log.info(f"read {files} batch file(s) at commit {commit.id}")
        # Parquet keeps attrs: every downstream asset knows the exact commit it descends from.
        df.attrs.update(
            lakefs_repository=store.repository,
            lakefs_ref=config.ref or "main",
            lakefs_commit=commit.id,
        )
        yield dg.Output(
            df,
            data_version=dg.DataVersion(commit.id),
            metadata={
                **commit_metadata(store, commit, config.ref or "main"),
                **frame_metadata(df),
                "batch_files": files,
            },
        )
        for check in CHECKS:
            failed = [v for v in violations if v.check == check]
            yield dg.AssetCheckResult(
                check_name=check,
                passed=not failed,
                severity=dg.AssetCheckSeverity.ERROR,
                description="; ".join(map(str, failed))[:2000] if failed else "passed",
                metadata={"lakefs_commit": commit.id, "violations": len(failed)},
            )

    return [raw_data, ingest_audit, dataset]
