"""The code location: assembles one group of assets per model spec. It computes nothing."""

import dagster as dg

from mlops_assets.defs.automation import build_automation_sensor, build_commit_sensor
from mlops_assets.defs.data.assets import build_data_assets
from mlops_assets.defs.deployment.assets import build_deployment_assets
from mlops_assets.defs.features.assets import build_feature_assets
from mlops_assets.defs.inference.assets import build_inference_assets
from mlops_assets.defs.k8s import executor_for
from mlops_assets.defs.keys import raw_data_key
from mlops_assets.defs.monitoring.assets import build_monitoring_assets
from mlops_assets.defs.monitoring.sensors import (
    build_drift_sensor,
    build_freshness_sensor,
    build_monitoring_sensor,
)
from mlops_assets.defs.monitoring.upkeep import build_upkeep_assets, build_upkeep_schedule
from mlops_assets.defs.resources import build_resources
from mlops_assets.defs.training.assets import build_training_assets
from mlops_assets.settings import Settings
from mlops_assets.specs import load_specs


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()  # every switch, read once
    specs = load_specs(settings.specs_dir)
    assets: list[dg.AssetsDefinition | dg.SourceAsset] = []
    checks: list[dg.AssetChecksDefinition] = []
    sensors: list[dg.SensorDefinition] = []
    schedules: list[dg.ScheduleDefinition] = []
    for spec in specs:
        sensors += [
            build_automation_sensor(spec),  # new data: the loop, declaratively
            build_commit_sensor(spec),
            build_monitoring_sensor(spec),  # new predictions/labels: drift, performance
            build_drift_sensor(spec),  # failing drift/performance: retrain
            build_freshness_sensor(spec),  # stale model: retrain
        ]
        built = [
            *build_data_assets(spec),
            *build_feature_assets(spec),
            *build_training_assets(spec),
            *build_deployment_assets(spec),
            *build_monitoring_assets(spec),
            *build_inference_assets(spec),  # batch predictions, daily partitions
            *build_upkeep_assets(spec, settings.log_retention_days),
        ]
        schedules.append(build_upkeep_schedule(spec))  # the log's upkeep, daily
        for d in built:
            if isinstance(d, dg.AssetChecksDefinition):
                checks.append(d)
            else:
                assets.append(d)
    observe = dg.define_asset_job(
        "observe_sources",
        selection=dg.AssetSelection.assets(*(raw_data_key(s.name) for s in specs)),
        description="Record the lakeFS commit at the head of main of every dataset.",
    )
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[observe],
        schedules=schedules,
        sensors=sensors,
        resources=build_resources(settings),
        executor=executor_for(settings.executor),
    )
