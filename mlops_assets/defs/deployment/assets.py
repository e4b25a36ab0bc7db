"""Group ``deployment``: the version that passed the gate, rolled out to every inference-server
replica (canary or blue-green, through the registry's shared desired state) and promoted or
rolled back automatically on figures aggregated over every replica.

Compare-and-set: the version rolled out is the one THIS run's gate passed (read from the run's
own model_evaluation materialization and the version's registry tags, never from a file a
concurrent run may have rewritten), and only while ``production`` still names the champion that
gate compared it with; if it moved, the comparison is re-run against the one that serves now
(``mlops_assets.training.promotion``). Every move of the alias, and every rollback, is appended
to the model's audit trail (``mlops history NAME``)."""

from dataclasses import fields

import dagster as dg
from pydantic import Field

from mlops_assets.defs.conditions import LOOP
from mlops_assets.defs.keys import (
    TRIGGER,
    deployment_key,
    drift_report_key,
    features_key,
    model_evaluation_key,
)
from mlops_assets.defs.metadata import MetadataEntry
from mlops_assets.defs.resources import DataStoreResource
from mlops_assets.defs.resources.serving import ServingResource
from mlops_assets.defs.resources.tracking import MlflowResource
from mlops_assets.defs.runs import latest_metadata, run_or_latest_metadata
from mlops_assets.featurize import SPLIT
from mlops_assets.serving.rollout import Policy, RegistryControl, Result, rollout
from mlops_assets.specs import ModelSpec
from mlops_assets.training.history import (
    FIRST_MODEL,
    PROMOTE,
    ROLLBACK,
    AuditTrail,
    Entry,
    audit_repository,
)
from mlops_assets.training.promotion import ChampionCheck, compare_and_set
from mlops_assets.training.tracking import Tracking
from mlops_assets.training.train import records, split

# Production may move again while we re-gate and roll out (another rollout, a person): each
# move costs one more comparison, and after this many the deployment refuses rather than chase.
CAS_ATTEMPTS = 3
SERVING = ("promoted", "first_deployment", "already_serving")


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
    healthy = result.decision in SERVING
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


def _candidate(context: dg.AssetExecutionContext, spec: ModelSpec, config: DeployConfig) -> str:
    """The version THIS run's gate judged (or, deploying alone, the last one judged)."""
    gated = run_or_latest_metadata(context, model_evaluation_key(spec.name))
    if not gated or "challenger_version" not in gated:
        raise dg.Failure(
            f"no gate decision to deploy: materialize "
            f"{model_evaluation_key(spec.name).to_user_string()} first",
            allow_retries=False,
        )
    if config.strategy not in ("canary", "blue_green"):
        raise dg.Failure(f"strategy {config.strategy!r}: use canary or blue_green")
    if config.decision_rule not in ("sequential", "fixed"):
        raise dg.Failure(f"decision_rule {config.decision_rule!r}: use sequential or fixed")
    return str(gated["challenger_version"])


def _moved(result: Result) -> bool:
    return result.decision == "champion_moved"


def _policy(config: DeployConfig, serving: ServingResource) -> Policy:
    return Policy(
        **{f.name: getattr(config, f.name) for f in fields(Policy) if hasattr(config, f.name)},
        lease_seconds=serving.lease_seconds,
    )


def _canary_evidence(result: Result) -> dict:
    keep = ("requests", "errors", "error_rate", "p95_ms", "mean_prediction")
    out = {k: result.candidate_stats[k] for k in keep if k in result.candidate_stats}
    prod = result.production_stats.get("mean_prediction")
    if prod is not None:
        out["production_mean_prediction"] = prod
    return out


def audit_entry(
    spec: ModelSpec,
    result: Result,
    check: ChampionCheck,
    run_id: str,
    trigger: str,
    actor: str,
    drift_share: float | None,
) -> Entry | None:
    """The audit-trail entry of a rollout's outcome (None when nothing moved: the candidate
    already served, or production moved and nothing was rolled out)."""
    action, frm, to = {
        "promoted": (PROMOTE, result.production_before, result.candidate),
        "first_deployment": (FIRST_MODEL, None, result.candidate),
        # the alias stays; the candidate that answered part of the traffic is withdrawn
        "rolled_back": (ROLLBACK, result.candidate, result.production_before),
    }.get(result.decision, (None, None, None))
    if action is None:
        return None
    evidence: dict = {"gate": check.evidence(), "strategy": result.strategy}
    if action != FIRST_MODEL:
        evidence["canary"] = _canary_evidence(result)
    if drift_share is not None:
        evidence["drift_share"] = drift_share
    if check.regated:
        evidence["compare_and_set"] = check.reason
    return Entry(
        spec.model_name, action, frm, to, trigger, result.reason, run_id=run_id, actor=actor,
        evidence=evidence,
    )  # fmt: skip


def _drift_share(context: dg.AssetExecutionContext, spec: ModelSpec) -> float | None:
    """The drift share that triggered this run, else the latest drift report's."""
    tagged = context.run.tags.get("mlops/drift_share")
    if tagged is not None:
        return float(tagged)
    value = (latest_metadata(context.instance, drift_report_key(spec.name)) or {}).get(
        "drift_share"
    )
    return float(value) if isinstance(value, int | float) else None


def _audit(
    context: dg.AssetExecutionContext,
    spec: ModelSpec,
    trail: AuditTrail,
    result: Result,
    check: ChampionCheck,
) -> str | None:
    """Append the rollout's outcome to the audit trail; the commit that holds it, if any."""
    entry = audit_entry(
        spec,
        result,
        check,
        context.run.run_id,
        context.run.tags.get(TRIGGER, "manual launch"),
        context.run.tags.get("dagster/user", ""),
        _drift_share(context, spec),
    )
    return trail.append(entry)[1] if entry is not None else None


def _trail_metadata(trail: AuditTrail, commit: str | None, spec: ModelSpec) -> dict:
    """Where the audit trail is, its latest entries, and how to print it."""
    entries = trail.entries()
    rows = ["| when | action | from | to | trigger | run |", "|---|---|---|---|---|---|"]
    for e in entries[-10:]:
        rows.append(
            f"| {e.at[:19]} | {e.action} | {e.from_version or '-'} | {e.to_version or '-'} | "
            f"{e.trigger} | {(e.run_id or '-')[:8]} |"
        )
    meta: dict = {
        "audit_trail": dg.MetadataValue.md("\n".join(rows)),
        "audit_entries": len(entries),
        "audit_location": trail.location(),
        "audit_command": f"mlops history {spec.name}",
    }
    if commit:
        meta["audit_commit"] = dg.MetadataValue.text(commit)
        url = trail.store.commit_url(commit)
        if url:
            meta["audit_commit_url"] = dg.MetadataValue.url(url)
    return meta


def build_deployment_assets(spec: ModelSpec) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=deployment_key(spec.name),
        automation_condition=LOOP,
        # The gate's verdict is read from this run's materialization and the registry, not
        # from model_evaluation's stored file (one per asset, shared by concurrent runs).
        deps=[model_evaluation_key(spec.name)],
        ins={"features": dg.AssetIn(key=features_key(spec.name))},
        group_name="deployment",
        kinds={"mlflow"},
        io_manager_key="json_io_manager",
        # one model's gate and rollout share a pool: a gate never compares with a champion
        # that a rollout is replacing at that moment (limit 1 in dagster.yaml)
        pool=f"mlops_gate_{spec.name}",
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
        features,  # a pandas DataFrame; annotated, it would make loading the defs import pandas
        serving: ServingResource,
        mlflow: MlflowResource,
        data_store: DataStoreResource,
    ):
        candidate = _candidate(context, spec, config)
        client = serving.client()
        tracking = mlflow.tracking()
        x, y = split(features, spec, "holdout")
        trail = AuditTrail(
            data_store.open(audit_repository(spec.dataset.repository)), spec.model_name
        )
        policy = _policy(config, serving)
        holdout = records(features[features[SPLIT] == "holdout"], spec)
        replay = serving.replay_holdout if config.replay_holdout is None else config.replay_holdout
        from mlops_assets.serving.client import Replay  # httpx: imported only when deploying

        def traffic(version):
            return Replay(client, spec.name, holdout, threads=4, version=version)

        analysis = serving.analysis()

        def roll_out(champion: str | None) -> Result:
            # the rollout starts and promotes only while production still names ``champion``
            return rollout(
                RegistryControl(tracking, spec.model_name), analysis, spec.name, candidate,
                policy, traffic=traffic if replay else None, log=context.log.info,
                expected_production=champion,
            )  # fmt: skip

        check, outcome = compare_and_set(
            tracking, spec, candidate, x, y, roll_out,
            _moved, context.log.info, CAS_ATTEMPTS,
        )  # fmt: skip
        if outcome is None and not check.regated:  # the gate itself refused: nothing to deploy
            raise dg.Failure(check.reason, allow_retries=False)
        result = outcome or Result("refused", check.reason, candidate, check.champion)
        commit = _audit(context, spec, trail, result, check)
        tracking.tag_version(
            spec.model_name,
            candidate,
            {"deploy.decision": result.decision, "deploy.reason": result.reason[:4000]},
        )
        healthy = result.decision in SERVING
        meta = _rollout_metadata(result, candidate, client.url, tracking, spec, analysis.describe())
        meta["gate_compared_with"] = check.compared_against or "none"
        if check.regated:
            meta["compare_and_set"] = check.reason
        meta.update(_trail_metadata(trail, commit, spec))
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
