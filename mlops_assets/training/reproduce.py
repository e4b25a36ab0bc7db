"""Reproduce a registered model version from its recorded lineage and say whether it matched.

The version's tags name the lakeFS commit, the hyperparameters, the code version and the
library versions. Reproduction reads the data at that commit, rebuilds the features, fits
again, and compares with the registered artifact: predictions on the holdout must be
identical and the canonical model digest equal. Differences in code or library versions are
reported, since they are the usual reason a reproduction cannot match.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

import numpy as np

from mlops_assets.featurize import SPLIT, build_features
from mlops_assets.quality import read_dataset
from mlops_assets.specs import Hyperparameters, ModelSpec
from mlops_assets.store import VersionedStore
from mlops_assets.training import lineage
from mlops_assets.training.run import code_version
from mlops_assets.training.tracking import Tracking, model_bytes
from mlops_assets.training.train import fit, inputs, predictions

REQUIRED_TAGS = ("lakefs.commit", "mlops.params", "mlops.run_hash", "mlops.model_digest")


@dataclass(frozen=True)
class Reproduction:
    model_name: str
    version: str
    lakefs_commit: str
    run_hash_recorded: str
    run_hash_now: str
    digest_recorded: str
    digest_now: str
    holdout_rows: int
    predictions_equal: bool
    max_abs_difference: float
    differences: list[str] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return self.predictions_equal and self.digest_now == self.digest_recorded

    def summary(self) -> str:
        head = (
            f"{self.model_name} version {self.version} at lakeFS commit {self.lakefs_commit[:12]}"
        )
        if self.matched:
            return (
                f"MATCH: {head}: retrained model has the same digest {self.digest_now[:12]} and "
                f"identical predictions on {self.holdout_rows} holdout rows "
                f"(run hash {self.run_hash_now[:12]})"
            )
        why = "; ".join(self.differences) or "same recorded inputs, different result"
        return (
            f"MISMATCH: {head}: digest {self.digest_now[:12]} vs recorded "
            f"{self.digest_recorded[:12]}, max prediction difference "
            f"{self.max_abs_difference:.3g} on {self.holdout_rows} holdout rows; {why}"
        )


def reproduce(
    tracking: Tracking, spec: ModelSpec, version: str, store: VersionedStore
) -> Reproduction:
    name = spec.model_name
    mv = tracking.version(name, version)
    tags = dict(mv.tags)
    missing = [t for t in REQUIRED_TAGS if t not in tags]
    if missing:
        raise ValueError(
            f"{name} version {version} lacks lineage tags {missing}: it was not registered by "
            "mlops-assets, so it cannot be reproduced from its lineage"
        )
    commit = tags["lakefs.commit"]
    params = Hyperparameters.model_validate(json.loads(tags["mlops.params"]))

    differences = []
    now_code = code_version(spec)
    if tags.get("mlops.code_version") != now_code:
        differences.append(
            f"code version is {now_code}, the version was trained with "
            f"{tags.get('mlops.code_version')}"
        )
    libs = lineage.library_versions()
    for lib, v in libs.items():
        recorded = tags.get(f"lib.{lib}")
        if recorded and recorded != v:
            differences.append(f"{lib} is {v}, the version was trained with {recorded}")

    dataset, violations, _ = read_dataset(store, spec.dataset, commit)
    if violations:
        differences.append(f"the data at {commit[:12]} now fails {len(violations)} check(s)")
    features = build_features(dataset, spec)
    trained = fit(features, spec, params)
    digest_now = lineage.model_digest(model_bytes(trained.pipeline)[0])

    holdout = features[features[SPLIT] == "holdout"]
    from mlops_assets.training.pipeline import spec_types

    registered = tracking.load_model(name, version, spec_types(spec))
    if spec.task == "multiclass":  # P(class) per class: numbers to compare, not class names
        x = inputs(holdout, spec)
        ours, theirs = trained.pipeline.predict_proba(x), registered.predict_proba(x)
    else:
        ours, theirs = (
            predictions(trained.pipeline, holdout, spec),
            predictions(registered, holdout, spec),
        )
    diff = float(np.max(np.abs(ours - theirs))) if len(ours) else 0.0
    result = Reproduction(
        model_name=name,
        version=str(version),
        lakefs_commit=commit,
        run_hash_recorded=tags["mlops.run_hash"],
        run_hash_now=lineage.run_hash(commit, now_code, params.model_dump(), libs),
        digest_recorded=tags["mlops.model_digest"],
        digest_now=digest_now,
        holdout_rows=len(holdout),
        predictions_equal=bool(np.array_equal(ours, theirs)),
        max_abs_difference=diff,
        differences=differences,
    )
    tracking.tag_version(
        name,
        version,
        {
            "mlops.reproduced": "match" if result.matched else "mismatch",
            "mlops.reproduced_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    )
    return result
