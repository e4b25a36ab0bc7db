"""Which runtime answers for a model version: ONNX Runtime when the gate verified the version's
ONNX graph against its skops pipeline on the whole holdout (tag ``onnx.parity = passed``),
otherwise the skops pipeline itself.

Both predictors have the interface the server's Batcher uses: ``predict_proba(frame)[:, 1]``
for a binary classifier, ``predict(frame)`` for a regressor, and a decision threshold that
``decision_threshold(predictor)`` reads. Loading an ONNX graph executes no code (see
``training/onnx_export.OnnxPredictor``); skops files load through the platform's allow-list.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mlops_assets.training.onnx_export import ONNXRUNTIME, SKOPS, TAG_PARITY

if TYPE_CHECKING:
    from mlops_assets.training.tracking import Tracking

log = logging.getLogger(__name__)
RUNTIMES = (ONNXRUNTIME, SKOPS)


def load_for_serving(
    tracking: Tracking,
    model_name: str,
    version: str,
    compiled: bool = True,
    trusted: frozenset[str] = frozenset(),
) -> tuple[object, str]:
    """``(predictor, runtime)`` for ``version`` of ``model_name``; ``runtime`` is
    ``"onnxruntime"`` or ``"skops"``. ``compiled=False`` always loads skops.

    A version whose parity passed but whose graph cannot be loaded now (a missing file, a
    refused operator) is served by skops, with a warning: a model that can answer always does.
    """
    from mlops_assets.training.onnx_export import OnnxPredictor, load_onnx_bytes
    from mlops_assets.training.tracking import TrackingUnavailable

    if compiled:
        tags = dict(tracking.version(model_name, version).tags or {})
        if tags.get(TAG_PARITY) == "passed":
            try:
                data = load_onnx_bytes(tracking, model_name, version)
                return OnnxPredictor(data, f"version {version} of {model_name!r}"), ONNXRUNTIME
            except TrackingUnavailable:
                raise
            except Exception as e:
                log.warning(
                    "version %s of %r: its ONNX graph passed parity but does not load (%s: %s); "
                    "serving the skops model",
                    version,
                    model_name,
                    type(e).__name__,
                    e,
                )
    # ``trusted``: the types of the pipeline the model's reviewed spec builds (spec_types)
    return tracking.load_model(model_name, version, trusted), SKOPS


def runtime_of(predictor: object) -> str:
    """The runtime a loaded predictor runs on: ``"onnxruntime"`` or ``"skops"``."""
    return getattr(predictor, "runtime", SKOPS)
