"""Group ``features``: the deterministic feature table with its split and reference profile."""

import json

import dagster as dg

from mlops_assets.defs.conditions import LOOP
from mlops_assets.defs.keys import dataset_key, features_key
from mlops_assets.defs.metadata import frame_metadata, latest_data_version, spec_version
from mlops_assets.defs.resources import LocalFilesResource
from mlops_assets.featurize import REVISION, SPLIT, build_features, reference_profile
from mlops_assets.specs import ModelSpec


def build_feature_assets(spec: ModelSpec) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=features_key(spec.name),
        automation_condition=LOOP,
        ins={"dataset": dg.AssetIn(key=dataset_key(spec.name))},
        group_name="features",
        kinds={"pandas"},
        code_version=spec_version(spec, REVISION),
        description=f"Features, train/holdout split and reference profile for '{spec.name}'.",
    )
    def features(
        context: dg.AssetExecutionContext,
        dataset,  # a pandas DataFrame; annotated, it would make loading the defs import pandas
        files: LocalFilesResource,
    ) -> dg.Output:
        table = build_features(dataset, spec)
        profile = reference_profile(table, spec)
        commit = dataset.attrs.get("lakefs_commit") or (
            latest_data_version(context.instance, dataset_key(spec.name)) or "unknown"
        )
        table.attrs["lakefs_commit"] = commit
        profile["lakefs_commit"] = commit
        path = files.write_text(
            ("reference", spec.name, f"{commit}.json"),
            json.dumps(profile, indent=1, sort_keys=True),
        )
        counts = table[SPLIT].value_counts()
        return dg.Output(
            table,
            metadata={
                "lakefs_commit": dg.MetadataValue.text(commit),
                "train_rows": int(counts.get("train", 0)),
                "holdout_rows": int(counts.get("holdout", 0)),
                "features": dg.MetadataValue.json(list(spec.features)),
                "target": spec.target,
                "reference_profile": dg.MetadataValue.path(str(path)),
                "reference_profile_summary": dg.MetadataValue.json(profile),
                **frame_metadata(table),
            },
        )

    return [features]
