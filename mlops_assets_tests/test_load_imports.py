"""Loading the code location imports none of the heavy libraries its assets use: they are
imported inside the functions that need them, so the code server, the daemon and every run
worker load the definitions in about the time of an empty code location."""

import json
import os
import subprocess
import sys

import pytest

from mlops_assets_tests.processes import REPO

HEAVY = ["pandas", "numpy", "pyarrow", "httpx", "mlflow", "evidently", "sklearn", "skops"]

LOAD = """
import json, sys
import mlops_assets.definitions as d
defs = d.defs()
print(json.dumps({
    "file": d.__file__,
    "assets": len(list(defs.resolve_asset_graph().get_all_asset_keys())),
    "modules": sorted(sys.modules),
}))
"""

REMOTE = {  # every service switched to a remote one: other resources, same rule
    "MLOPS_DATA_BACKEND": "lakefs",
    "LAKEFS_ENDPOINT": "http://lakefs.invalid:8000",
    "LAKEFS_ACCESS_KEY_ID": "key",
    "LAKEFS_SECRET_ACCESS_KEY": "secret",
    "MLOPS_SERVING_URL": "http://inference.invalid:8080",
    "MLOPS_PROMETHEUS_URL": "http://prometheus.invalid:9090",
}


@pytest.fixture(scope="module", params=[{}, REMOTE], ids=["embedded", "remote-services"])
def loaded(request, tmp_path_factory) -> set[str]:
    """The modules a fresh interpreter holds after importing and building the definitions."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_", "LAKEFS_"))
    }
    env.update(DAGSTER_HOME=str(tmp_path_factory.mktemp("home")), **request.param)
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", LOAD],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["file"].startswith(str(REPO))  # this checkout's code, not an installed copy
    assert result["assets"] > 0
    assert "dagster" in result["modules"]
    return set(result["modules"])


@pytest.mark.parametrize("library", HEAVY)
def test_loading_the_definitions_does_not_import(loaded, library):
    assert library not in loaded, (
        f"loading the definitions imported {library}: import it inside the functions that use "
        "it (annotations: `from __future__ import annotations` and `if TYPE_CHECKING:`); "
        "`python -X importtime -c 'import mlops_assets.definitions as d; d.defs()'` shows "
        "which module imported it"
    )
