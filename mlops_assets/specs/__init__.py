"""Model specs: a model is described by data, not by code.

Each ``*.yaml`` file in this folder (or in ``$MLOPS_SPECS_DIR``) describes one model: where
its data lives, the schema and quality rules of that data, the target, the feature columns
and how to split. The Dagster layer builds one set of assets per spec.
"""

from mlops_assets.specs.model import (
    ColumnSpec,
    DatasetSpec,
    EvaluationSpec,
    Hyperparameters,
    ModelSpec,
    SplitSpec,
    ThresholdSpec,
    load_specs,
)

__all__ = [
    "ColumnSpec",
    "DatasetSpec",
    "EvaluationSpec",
    "Hyperparameters",
    "ModelSpec",
    "SplitSpec",
    "ThresholdSpec",
    "load_specs",
]
