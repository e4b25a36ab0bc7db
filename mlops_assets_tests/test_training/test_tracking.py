"""Loading models safely, and registering idempotently."""

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.linear_model import LinearRegression

from mlops_assets.specs.model import get_spec
from mlops_assets.training.pipeline import build_pipeline
from mlops_assets.training.tracking import (
    TRUSTED_TYPES,
    RegistryError,
    load_skops,
    model_bytes,
)
from mlops_assets.training.train import inputs


@pytest.mark.parametrize("estimator", ["random_forest", "gradient_boosting", "linear"])
@pytest.mark.parametrize("name", ["churn", "demand"])
def test_every_pipeline_we_build_loads_with_the_fixed_allow_list(tmp_path, name, estimator):
    spec = get_spec(name)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            c: rng.normal(size=40) if c in spec.numeric_features else rng.choice(["a", "b"], 40)
            for c in spec.features
        }
    )
    y = rng.integers(0, 2, 40) if spec.task == "classification" else rng.normal(size=40)
    params = spec.model.model_copy(update={"estimator": estimator, "n_estimators": 3})
    pipeline = build_pipeline(spec, params).fit(inputs(frame, spec), y)
    blob, needed = model_bytes(pipeline)
    assert set(needed) <= TRUSTED_TYPES
    path = tmp_path / "model.skops"
    path.write_bytes(blob)
    loaded = load_skops(path, "test model")
    assert np.array_equal(
        loaded.predict(inputs(frame, spec)), pipeline.predict(inputs(frame, spec))
    )


def _tampered(tmp_path, module: str, name: str, argument: str):
    """A skops file whose schema calls ``module.name(argument)`` when loaded."""
    good = sio.dumps(LinearRegression())
    schema = json.loads(zipfile.ZipFile(io.BytesIO(good)).read("schema.json"))
    payload = {
        "__class__": name,
        "__module__": module,
        "__loader__": "ConstructorFromReduceNode",
        "content": {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "content": [
                {
                    "__class__": "str",
                    "__module__": "builtins",
                    "__loader__": "JsonNode",
                    "content": json.dumps(argument),
                    "is_json": True,
                }
            ],
        },
        "protocol": schema["protocol"],
        "_skops_version": schema.get("_skops_version"),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("schema.json", json.dumps(payload))
    path = tmp_path / "evil.skops"
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.parametrize(("module", "name"), [("builtins", "eval"), ("numpy", "load")])
def test_a_tampered_model_file_is_refused_before_anything_runs(tmp_path, module, name):
    marker = tmp_path / "PWNED"
    code = f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"
    path = _tampered(tmp_path, module, name, code)
    with pytest.raises(RegistryError, match=rf"{module}\.{name}.*refusing to load"):
        load_skops(path, "version 9 of 'churn'")
    assert not marker.exists()


def test_registering_twice_from_one_run_gives_one_version(server_env):
    from mlops_assets.defs.keys import dataset_key, features_key, trained_model_key
    from mlops_assets.training.tracking import register

    env = server_env
    spec = env.spec("demand")
    env.seed(spec)
    keys = [dataset_key("demand"), features_key("demand"), trained_model_key("demand")]
    assert env.run(keys).success
    mat = env.instance.get_latest_materialization_event(trained_model_key("demand"))
    meta = {k: v.value for k, v in mat.asset_materialization.metadata.items()}
    tracking = env.tracking()
    again = register(
        tracking, spec.model_name, f"models:/{spec.model_name}/1", meta["mlflow_run_id"], {}
    )
    assert again.version == str(meta["model_version"])
    assert len(env.client().search_model_versions(f"name = '{spec.model_name}'")) == 1
