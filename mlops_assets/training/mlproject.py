"""``mlflow run . -e train``: the same training function outside Dagster, for ad-hoc experiments.

Reads the spec's dataset at a lakeFS ref, builds the features, fits with the spec's
hyperparameters (each one can be overridden with ``-P name=value``), and logs to the run that
``mlflow run`` started, with the same lineage tags and run hash as the Dagster asset. It does
not register a version unless ``-P register=true``: the registry is the gate's business.

    mlflow run . -e train --env-manager local -P spec=churn -P n_estimators=300
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from mlops_assets.featurize import build_features
from mlops_assets.quality import read_dataset
from mlops_assets.settings import Settings
from mlops_assets.specs import Hyperparameters
from mlops_assets.specs.model import check_estimator_override, get_spec, validation_problems

PARAMS = tuple(Hyperparameters.model_fields)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mlflow run . -e train", description=__doc__.split("\n")[0])
    p.add_argument("--spec", required=True, help="model spec name, e.g. churn")
    p.add_argument("--ref", default="main", help="lakeFS commit, tag or branch to read")
    p.add_argument("--register", default="false", choices=["true", "false"])
    for name in PARAMS:
        p.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default="",
            help=f"{Hyperparameters.model_fields[name].description} (empty: the spec's)",
        )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import mlflow

    from mlops_assets.store import open_store
    from mlops_assets.training.run import lineage_tags, train_and_log
    from mlops_assets.training.tracking import register, tracking_from_env

    args = parse(argv)
    spec = get_spec(args.spec)
    overrides = {n: getattr(args, n) for n in PARAMS if getattr(args, n) != ""}
    if overrides.get("max_depth", "").lower() in ("none", "null"):
        overrides["max_depth"] = None
    try:
        check_estimator_override(spec, overrides.get("estimator", spec.model.estimator))
        params = Hyperparameters.model_validate({**spec.model.model_dump(), **overrides})
    except ValueError as e:  # pydantic's ValidationError is one too
        problems = validation_problems(e, "parameter") if isinstance(e, ValidationError) else e
        print(f"train: rejected before training: {problems}", file=sys.stderr)
        return 2

    settings = Settings.from_env()
    store = open_store(settings.data_backend, spec.dataset.repository, **settings.store_options())
    commit = store.get_commit(args.ref)
    dataset, violations, _ = read_dataset(store, spec.dataset, commit.id)
    if violations:
        print(f"train: data at {commit.id} fails its checks: {violations[0]}", file=sys.stderr)
        return 2
    features = build_features(dataset, spec)

    tracking = tracking_from_env(settings)
    tracking.configure()
    tags = lineage_tags(
        spec,
        params,
        commit.id,
        spec.dataset.repository,
        {"mlops.entry_point": "mlflow run"},
        data_ref=args.ref,
    )
    if settings.mlflow_run_id is None:  # run directly, not by `mlflow run`
        mlflow.set_experiment(experiment_id=tracking.ensure_experiment(spec))
    with mlflow.start_run() as run:
        logged = train_and_log(tracking, spec, features, params, tags)
    print(f"run {run.info.run_id}: {logged.trained.metrics} run_hash={logged.run_hash}")
    if args.register == "true":
        version = register(
            tracking,
            spec.model_name,
            logged.model_uri,
            run.info.run_id,
            {**logged.tags, "mlflow.run_id": run.info.run_id},
        )
        print(
            f"registered {spec.model_name} version {version.version} (no alias: the gate decides)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
