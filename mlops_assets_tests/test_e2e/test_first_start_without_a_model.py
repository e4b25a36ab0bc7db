"""A first start whose model the gate refuses says so plainly: `mlops ready` (which
scripts/run.sh calls) names the model, the gate's reason and the log, and the inference server
answers 503 naming what is missing, while the model that passed is served."""

import json

import httpx
import pytest

from mlops_assets.specs.model import get_spec
from mlops_assets_tests.processes import BIN, free_port, fresh_home, start, stop, wait_until
from mlops_assets_tests.test_e2e.test_cli_training import materialize, run
from mlops_assets_tests.test_serving.conftest import _ready
from mlops_assets_tests.test_training.conftest import unique_specs

pytestmark = pytest.mark.e2e

ROW = {
    "tenure_months": 3,
    "monthly_charges": 80.0,
    "support_tickets": 4,
    "usage_hours": 10.0,
    "plan": "basic",
    "region": "north",
}


def test_a_refused_first_model_is_reported_and_answered_503(tmp_path, mlflow_server):
    specs_dir = unique_specs(tmp_path)
    env = fresh_home(tmp_path, MLFLOW_TRACKING_URI=mlflow_server.url, MLOPS_SPECS_DIR=specs_dir)
    run([BIN / "mlops", "seed", "--days", "6", "--rows", "250", "--end", "2026-11-30"], env)

    # nothing trained yet: not ready, and why
    proc = run([BIN / "mlops", "ready", "--spec", "churn"], env, expect=1)
    assert "[churn] NO production model: no version was registered" in proc.stderr

    # demand passes its gate; churn's first model meets a floor no model reaches
    materialize(env, "*demand/model_evaluation")
    strict = {"ops": {"churn__model_evaluation": {"config": {"floor": 0.999}}}}
    materialize(env, "*churn/model_evaluation", strict, expect=1)
    log = tmp_path / "first-training.log"
    proc = run([BIN / "mlops", "ready", "--log", str(log)], env, expect=1)
    assert "[demand] production: version 1 (r2 " in proc.stdout, proc.stdout
    reason = proc.stderr
    assert "[churn] NO production model: the promotion gate refused version 1: " in reason
    assert "challenger roc_auc=" in reason and "< floor 0.9990: refused" in reason, reason
    assert f"the training log is {log}" in reason and "README" in reason

    # the server starts anyway: demand is served, churn answered 503 with what is missing
    port = free_port()
    server_log = tmp_path / "server.log"
    server = start(
        [str(BIN / "mlops"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env,
        server_log,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        wait_until(
            "demand served", lambda: _ready(f"{url}/v2/models/demand"), 120, server, server_log
        )
        answer = httpx.post(f"{url}/predict", json={"model": "churn", "records": [ROW]})
        assert answer.status_code == 503
        message = json.dumps(answer.json())
        churn = get_spec("churn", specs_dir)
        assert f"no production version of {churn.name!r} yet" in message, message
        assert "+churn/model_evaluation" in message and "gate" in message
        ready = httpx.get(f"{url}/v2/models/churn/ready", timeout=2)
        assert ready.status_code == 503
    finally:
        stop(server)
