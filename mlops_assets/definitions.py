"""The code location: assembles one group of assets per model spec. It computes nothing."""

import dagster as dg

from mlops_assets.defs.automation import automation_sensor, build_commit_sensor
from mlops_assets.defs.data.assets import build_data_assets, raw_data_key
from mlops_assets.defs.deployment.assets import build_deployment_assets
from mlops_assets.defs.features.assets import build_feature_assets
from mlops_assets.defs.monitoring.assets import build_monitoring_assets
from mlops_assets.defs.monitoring.sensors import (
    build_drift_sensor,
    build_freshness_sensor,
    build_monitoring_sensor,
)
from mlops_assets.defs.resources import build_resources
from mlops_assets.defs.training.assets import build_training_assets
from mlops_assets.specs import load_specs


@dg.definitions
def defs() -> dg.Definitions:
    assets, checks = [], []
    for spec in load_specs():
        built = [
            *build_data_assets(spec),
            *build_feature_assets(spec),
            *build_training_assets(spec),
            *build_deployment_assets(spec),
            *build_monitoring_assets(spec),
        ]
        for d in built:
            (checks if isinstance(d, dg.AssetChecksDefinition) else assets).append(d)
    observe = dg.define_asset_job(
        "observe_sources",
        selection=dg.AssetSelection.assets(*(raw_data_key(s.name) for s in load_specs())),
        description="Record the lakeFS commit at the head of main of every dataset.",
    )
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[observe],
        sensors=[
            automation_sensor(),
            *(build_commit_sensor(s) for s in load_specs()),
            *(build_monitoring_sensor(s) for s in load_specs()),
            *(build_drift_sensor(s) for s in load_specs()),
            *(build_freshness_sensor(s) for s in load_specs()),
        ],
        resources=build_resources(),
        executor=dg.in_process_executor,
    )
