"""Group ``deployment``: the version that passed the gate, rolled out to every inference-server
replica (canary or blue-green, through the registry's shared desired state) and promoted or
rolled back automatically on figures aggregated over every replica."""

from dataclasses import fields

import dagster as dg
import pandas as pd
from pydantic import Field

from mlops_assets.defs.conditions import LOOP
from mlops_assets.defs.keys import deployment_key, features_key, model_evaluation_key
from mlops_assets.defs.metadata import MetadataEntry
from mlops_assets.defs.resources.serving import ServingResource
from mlops_assets.defs.resources.tracking import MlflowResource
from mlops_assets.featurize import SPLIT
from mlops_assets.serving.client import Replay
from mlops_assets.serving.rollout import Policy, RegistryControl, Result, rollout
from mlops_assets.specs import ModelSpec
from mlops_assets.training.tracking import Tracking
from mlops_assets.training.train import records


class DeployConfig(dg.Config):
    strategy: str = Field(default="canary", description="'canary' or 'blue_green'")
    canary_weight: float = Field(
        default=0.2, gt=0, le=1, description="canary: share of requests the new version answers"
    )
    window_requests: int = Field(
        default=1000,
        ge=1,
        description=(
            "the most requests the new version answers before a decision: the sequential "
            "test decides earlier when the evidence does; at this count the fixed-window rule "
            "decides"
        ),
    )
    decision_rule: str = Field(
        default="sequential",
        description=(
            "'sequential': decide as soon as the evidence supports promote or roll back (Wald's "
            "SPRT on failures and slow requests, see the README); 'fixed': always wait for "
            "window_requests"
        ),
    )
    false_promote_rate: float = Field(
        default=0.05, gt=0, lt=0.5, description="sequential: chance to promote a bad candidate"
    )
    false_rollback_rate: float = Field(
        default=0.05, gt=0, lt=0.5, description="sequential: chance to roll a good one back"
    )
    max_error_rate: float = Field(default=0.01, ge=0, le=1, description="largest error rate")
    max_p95_ms: float = Field(default=200.0, gt=0, description="largest p95 latency (ms)")
    max_prediction_shift: float = Field(
        default=0.5, ge=0, description="largest relative change of the mean prediction"
    )
    timeout_seconds: float = Field(default=120.0, gt=0, description="how long to watch")
    replay_holdout: bool | None = Field(
        default=None,
        description=(
            "send the holdout rows as traffic while watching; empty: the environment's "
            "default (MLOPS_REPLAY_HOLDOUT: on in the embedded demo, off in production, where "
            "real requests fill the window and replayed rows would reach monitoring)"
        ),
    )


def _rollout_metadata(
    result: Result,
    candidate: str,
    server_url: str,
    tracking: Tracking,
    spec: ModelSpec,
    analysis: str,
) -> dict[str, MetadataEntry]:
    """What a person reads on a rollout: the decision, why, and each version's window."""
    healthy = result.decision != "rolled_back"
    meta: dict[str, MetadataEntry] = {
        "decision": result.decision,
        "reason": result.reason,
        "strategy": result.strategy,
        "candidate_version": candidate,
        "production_before": result.production_before or "none",
        "production_now": candidate if healthy else (result.production_before or "none"),
        "server_url": dg.MetadataValue.url(server_url),
        "analysis": analysis,
        "rollout_id": result.rollout_id or "none",
        "replicas_not_in_sync": len(result.lagging),
        "candidate_stats": dg.MetadataValue.json(result.candidate_stats),
        "production_stats": dg.MetadataValue.json(result.production_stats),
    }
    for k in ("requests", "error_rate", "p95_ms", "mean_prediction"):
        v = result.candidate_stats.get(k)
        if isinstance(v, int | float):
            meta[f"candidate_{k}"] = float(v)
    url = tracking.version_url(spec.model_name, candidate)
    if url:
        meta["model_version_url"] = dg.MetadataValue.url(url)
    return meta


def build_deployment_assets(spec: ModelSpec) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=deployment_key(spec.name),
        automation_condition=LOOP,
        ins={
            "model_evaluation": dg.AssetIn(key=model_evaluation_key(spec.name)),
            "features": dg.AssetIn(key=features_key(spec.name)),
        },
        group_name="deployment",
        kinds={"mlflow"},
        io_manager_key="json_io_manager",
        pool=f"mlops_deploy_{spec.name}",
        description=f"The gated '{spec.model_name}' version rolled out to the inference server.",
        check_specs=[
            dg.AssetCheckSpec(
                name="rollout_healthy",
                asset=deployment_key(spec.name),
                description="The new version served its window within bounds and was promoted.",
            )
        ],
    )
    def deployment(
        context: dg.AssetExecutionContext,
        config: DeployConfig,
        model_evaluation: dict,
        features: pd.DataFrame,
        serving: ServingResource,
        mlflow: MlflowResource,
    ):
        if model_evaluation["decision"] != "passed":
            raise dg.Failure(
                f"version {model_evaluation['challenger_version']} did not pass the gate: "
                f"{model_evaluation['reason']}",
                allow_retries=False,
            )
        if config.strategy not in ("canary", "blue_green"):
            raise dg.Failure(f"strategy {config.strategy!r}: use canary or blue_green")
        if config.decision_rule not in ("sequential", "fixed"):
            raise dg.Failure(f"decision_rule {config.decision_rule!r}: use sequential or fixed")
        candidate = str(model_evaluation["challenger_version"])
        client = serving.client()
        tracking = mlflow.tracking()
        policy = Policy(
            **{f.name: getattr(config, f.name) for f in fields(Policy) if hasattr(config, f.name)},
            lease_seconds=serving.lease_seconds,
        )
        holdout = records(features[features[SPLIT] == "holdout"], spec)
        replay = serving.replay_holdout if config.replay_holdout is None else config.replay_holdout

        def traffic(version):
            return Replay(client, spec.name, holdout, threads=4, version=version)

        analysis = serving.analysis()
        result = rollout(
            RegistryControl(tracking, spec.model_name),
            analysis,
            spec.name,
            candidate,
            policy,
            traffic=traffic if replay else None,
            log=context.log.info,
        )
        tracking.tag_version(
            spec.model_name,
            candidate,
            {"deploy.decision": result.decision, "deploy.reason": result.reason[:4000]},
        )
        healthy = result.decision != "rolled_back"
        meta = _rollout_metadata(result, candidate, client.url, tracking, spec, analysis.describe())
        yield dg.Output(
            {
                "model": spec.name,
                "decision": result.decision,
                "reason": result.reason,
                "candidate": candidate,
                "production": meta["production_now"],
            },
            metadata=meta,
        )
        yield dg.AssetCheckResult(
            check_name="rollout_healthy",
            passed=healthy,
            severity=dg.AssetCheckSeverity.ERROR,
            description=result.reason[:2000],
        )

    return [deployment]
