"""What makes a training run repeatable: its run hash and a canonical digest of the model.

The run hash is a digest of everything that decides the fitted model: the lakeFS commit of
the data, the training code version, the hyperparameters and the versions of the libraries
that do the numerical work. Same hash, same model: identical holdout predictions and an
identical model digest.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import json
import platform
import re
import zipfile
from importlib import metadata
from pathlib import Path

# The libraries whose versions can change a fitted model or how it is stored.
LIBRARIES = ("scikit-learn", "numpy", "scipy", "pandas", "pyarrow", "skops")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@functools.cache
def source_digest(modules: tuple[str, ...]) -> str:
    """A short digest of the source files of ``modules``: the code that decides a model."""
    digest = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"cannot find the source of module {name!r}")
        digest.update(name.encode())
        digest.update(Path(spec.origin).read_bytes())
    return digest.hexdigest()[:10]


def run_hash(data_commit: str, code_version: str, params: dict, libraries: dict[str, str]) -> str:
    """sha256 over the canonical JSON of the run's inputs; 64 hex characters."""
    payload = json.dumps(
        {
            "data_commit": data_commit,
            "code_version": code_version,
            "params": params,
            "libraries": libraries,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def model_digest(skops_bytes: bytes) -> str:
    """A digest of a skops file's content that ignores what skops does not keep stable.

    skops names each array file, and marks each shared object, with ``id()`` of the object (a
    memory address), and stamps the zip entries with the current time, so the raw bytes of two
    identical models differ. Here member names in the schema are replaced by the hashes of
    their content and object ids by their order of first appearance, and the result is hashed:
    equal digests mean an equal schema and equal array bytes.
    """
    with zipfile.ZipFile(io.BytesIO(skops_bytes)) as zf:
        contents = {name: zf.read(name) for name in zf.namelist()}
    schema = contents.pop("schema.json").decode()
    names = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    if names:
        pattern = re.compile("|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)))
        schema = pattern.sub(lambda m: names[m.group(0)], schema)
    ids: dict[str, str] = {}
    schema = re.sub(
        r'"__id__": (\d+)',
        lambda m: f'"__id__": {ids.setdefault(m.group(1), str(len(ids)))}',
        schema,
    )
    digest = hashlib.sha256(schema.encode())
    for h in sorted(names.values()):
        digest.update(h.encode())
    return digest.hexdigest()


# ---- MLflow 3 lineage: the data a model learned from, its requirements, its card -------------

# What a logged model needs to load and answer: the libraries of LIBRARIES a pipeline imports,
# plus MLflow. Stated, not inferred: MLflow's inference loads the model in a subprocess (about
# 5 s a model here) and lists whatever that process happened to import (pytest, rich, ...).
MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "skops", "numpy", "scipy", "pandas")


def pip_requirements() -> list[str]:
    """The model's pip requirements, pinned to the versions it was fit with."""
    out = []
    for name in MODEL_REQUIREMENTS:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            if name != "mlflow":
                raise
            out.append(f"mlflow-skinny=={metadata.version('mlflow-skinny')}")
    return out


def lakefs_uri(repository: str, commit: str, prefix: str = "") -> str:
    """``lakefs://<repository>/<commit>/<prefix>``: the data at one immutable commit."""
    return f"lakefs://{repository}/{commit}/{prefix.lstrip('/')}"


@functools.cache
def _lakefs_source_class():
    """An MLflow DatasetSource for lakeFS URIs (MLflow has none), registered so that
    ``mlflow.data.get_source`` reads one back. Made on first use: MLflow is a heavy import."""
    from mlflow.data.dataset_source import DatasetSource
    from mlflow.data.dataset_source_registry import register_dataset_source

    class LakeFSDatasetSource(DatasetSource):
        """Objects under a prefix of a lakeFS repository at one commit."""

        def __init__(self, uri: str):
            self.uri = uri

        @staticmethod
        def _get_source_type() -> str:
            return "lakefs"

        def load(self, **kwargs):
            raise NotImplementedError(
                f"{self.uri}: read it with the platform's versioned store "
                "(mlops_assets.quality.read_dataset at that commit), not through MLflow"
            )

        @staticmethod
        def _can_resolve(raw_source) -> bool:
            return isinstance(raw_source, str) and raw_source.startswith("lakefs://")

        @classmethod
        def _resolve(cls, raw_source):
            return cls(str(raw_source))

        def to_dict(self) -> dict:
            return {"uri": self.uri}

        @classmethod
        def from_dict(cls, source_dict: dict):
            return cls(source_dict["uri"])

    register_dataset_source(LakeFSDatasetSource)
    return LakeFSDatasetSource


def lakefs_dataset(frame, uri: str, name: str, target: str):
    """An MLflow dataset (schema, row count, digest) of ``frame`` whose source is ``uri``."""
    from mlflow.data.pandas_dataset import from_pandas

    source = _lakefs_source_class()(uri)
    return from_pandas(frame, source=source, name=name, targets=target)


def model_card(
    spec,
    *,
    data: dict[str, str],
    train_rows: int,
    holdout_rows: int,
    metrics: dict[str, float],
    run: dict[str, str],
    threshold: float | None = None,
    threshold_rule: str = "",
    libraries: dict[str, str] | None = None,
) -> str:
    """A Markdown model card for one logged model: what it is for, what it learned from, how it
    scored, what drift is measured against, and what it was built with.

    ``data`` holds ``repository``, ``commit``, ``branch`` and ``uri``; ``run`` holds ``run_id``,
    ``run_hash``, ``code_version`` and ``model_digest``. The gate's decision comes later (at
    evaluation): see ``gate_section``."""
    libs = libraries or {**library_versions(), "mlflow": _version("mlflow")}
    kind = {"classification": "binary classification", "regression": "regression"}.get(
        spec.task, spec.task
    )
    numeric, categorical = set(spec.numeric_features), set(spec.categorical_features)
    lines = [
        f"# Model card: {spec.model_name}",
        "",
        f"**Spec** `{spec.name}` · **task** {kind} · **target** `{spec.target}`",
        "",
        "## Description and intended use",
        "",
        spec.description,
        "",
        f"Intended use: {kind} of `{spec.target}` from the features below, for rows shaped like "
        f"lakeFS repository `{data['repository']}` (prefix `{spec.dataset.prefix}`). Served "
        "only after the promotion gate and a canary; not validated for data outside the "
        "ranges and categories of the dataset spec.",
        "",
        "## Training data",
        "",
        "| | |",
        "|---|---|",
        f"| source | `{data['uri']}` |",
        f"| repository | `{data['repository']}` |",
        f"| commit | `{data['commit']}` |",
        f"| branch | `{data.get('branch', 'main')}` |",
        f"| train rows | {train_rows} |",
        f"| holdout rows | {holdout_rows} |",
        "",
        "## Features",
        "",
        "| feature | kind |",
        "|---|---|",
        *(
            f"| `{f}` | "
            f"{'numeric' if f in numeric else 'categorical' if f in categorical else 'other'} |"
            for f in spec.features
        ),
        "",
        f"## Holdout metrics ({holdout_rows} rows)",
        "",
        "| metric | value |",
        "|---|---:|",
        *(f"| {k} | {v:.6g} |" for k, v in metrics.items()),
    ]
    if threshold is not None:
        lines += ["", f"Decision threshold: {threshold:g} ({threshold_rule or 'fixed'})."]
    if spec.task == "classification":
        lines += [
            "",
            f"Positive class: `{spec.positive_label}`. The model answers P(positive); f1, "
            "roc_auc and the decision threshold are computed for it.",
        ]
    lines += [
        "",
        "## Drift reference",
        "",
        f"`drift_report` compares what this version serves with the train split of "
        f"`{data['uri']}` ({train_rows} rows), plus this version's own answers on it as "
        "`prediction`: per-column drift by Evidently's tests, the prediction judged on its own.",
        "",
        "## Lineage",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | `{v}` |" for k, v in run.items()),
        "",
        "## Library versions",
        "",
        "| library | version |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in sorted(libs.items())),
        "",
        "## Promotion gate",
        "",
        f"The reviewed spec's gate: {_gate_rule(spec)}. Decided at evaluation: the version's "
        "tags `gate.decision` and `gate.reason`.",
        "",
    ]
    return "\n".join(lines)


def _gate_rule(spec) -> str:
    e = spec.evaluation
    direction = ">=" if getattr(e, "higher_is_better", True) else "<="
    return (
        f"{e.metric} {direction} {e.floor:g}, and no more than {e.tolerance:.0%} worse than the "
        "champion"
    )


def gate_section(decision: str, reason: str, figures: dict[str, str] | None = None) -> str:
    """The gate's decision as a card section, to append once the version is evaluated."""
    rows = [f"| {k} | {v} |" for k, v in (figures or {}).items()]
    table = ["", "| | |", "|---|---|", *rows] if rows else []
    return "\n".join(
        ["", "## Promotion gate: decision", "", f"**{decision}**: {reason}", *table, ""]
    )


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"
