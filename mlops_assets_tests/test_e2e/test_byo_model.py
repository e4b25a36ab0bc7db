"""Bring your own model, exactly as the README's section does it, through the real CLIs on a
fresh DAGSTER_HOME against a real MLflow server, on three scikit-learn bundled data sets the
demo does not use: breast cancer (binary, a CSV whose 30 column names contain spaces), wine
(multiclass, a folder of daily Parquet files) and diabetes (regression, one Parquet file).
`mlops init` -> `mlops ingest` -> `dagster asset materialize` through the gate with the written
specs (only their registry names are made unique on the shared server); then batch
predictions for a day, the binary and multiclass models served over HTTP, and a drift report
on what each answered."""

import json
import subprocess
from pathlib import Path

import dagster as dg
import httpx
import pandas as pd
import pytest
import yaml

from mlops_assets.defs.keys import (
    batch_predictions_key,
    drift_report_key,
    model_evaluation_key,
    trained_model_key,
)
from mlops_assets.monitoring.windows import current_window
from mlops_assets.serving.predlog import predictions_repository
from mlops_assets.specs.model import get_spec
from mlops_assets.store.local import LocalStore
from mlops_assets_tests.processes import BIN, REPO, free_port, fresh_home, start, stop, wait_until
from mlops_assets_tests.servers import server_env

pytestmark = pytest.mark.e2e
NAMES = ("breast_cancer", "wine", "diabetes")


def breast_cancer_csv(path: Path) -> None:
    """The README's snippet: scikit-learn's breast cancer data with an id and a date."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer(as_frame=True).frame
    d.insert(0, "sample_id", [f"bc-{i:04d}" for i in range(len(d))])
    d.insert(1, "seen_on", [f"2026-11-{1 + i % 7:02d}" for i in range(len(d))])
    d.to_csv(path, index=False)


def wine_parquet_days(folder: Path) -> None:
    """scikit-learn's wine data (three classes) as one Parquet file per day, real dates."""
    from sklearn.datasets import load_wine

    d = load_wine(as_frame=True).frame
    d.insert(0, "bottle_id", [f"w{i:04d}" for i in range(len(d))])
    d.insert(1, "tasted_on", pd.to_datetime("2026-11-01") + pd.to_timedelta(d.index % 5, "D"))
    folder.mkdir()
    for day, part in d.groupby(d["tasted_on"].dt.strftime("%Y-%m-%d")):
        part.to_parquet(folder / f"{day}.parquet", index=False)


def diabetes_parquet(path: Path) -> None:
    """scikit-learn's diabetes data (a number to predict) as one Parquet file."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes(as_frame=True, scaled=False).frame
    d.insert(0, "patient_id", [f"p{i:04d}" for i in range(len(d))])
    d.insert(1, "visit_date", [f"2026-11-{1 + i % 5:02d}" for i in range(len(d))])
    d.to_parquet(path, index=False)


def run(cmd, env, expect: int | None = 0, timeout=600):
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    if expect is not None:
        assert proc.returncode == expect, (
            f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def materialize(env, *args: str, expect: int | None = 0):
    cmd = [BIN / "dagster", "asset", "materialize", "-m", "mlops_assets.definitions", *args]
    return run(cmd, env, expect)


def meta(home: Path, key) -> dict:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(key)
        assert event is not None, key
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def serve(env: dict, port: int, mlflow_url: str, log: Path):
    """``mlops serve`` on ``port`` with the test's platform settings, once it is ready."""
    serve_env = server_env(**{k: v for k, v in env.items() if k.startswith(("MLOPS_", "DAGSTER"))})
    serve_env.update(MLFLOW_TRACKING_URI=mlflow_url, MLOPS_LOG_SEGMENT_SECONDS="1")
    cmd = [str(BIN / "mlops"), "serve", "--port", str(port), "--poll-seconds", "0"]
    proc = start(cmd, serve_env, log)

    def ready():
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2)
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until("inference server", ready, 120, proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc


@pytest.mark.timeout(1200)
def test_init_ingest_train_gate_batch_score_serve_and_drift_on_bundled_data(
    tmp_path, mlflow_server
):
    specs = tmp_path / "specs"
    env = fresh_home(tmp_path, MLFLOW_TRACKING_URI=mlflow_server.url, MLOPS_SPECS_DIR=str(specs))
    home = Path(env["DAGSTER_HOME"])
    mlops = BIN / "mlops"
    # registered-model names of their own on the shared server
    suffix = tmp_path.name[-20:].replace("_", "-")

    # ---- breast cancer: a CSV, binary
    csv = tmp_path / "breast_cancer.csv"
    breast_cancer_csv(csv)
    out = run([mlops, "init", "breast_cancer", "--from", csv, "--target", "target"], env).stdout
    assert "task classification" in out and "30 feature(s)" in out
    assert "key 'sample_id'" in out and "date 'seen_on'" in out
    # ---- wine: a folder of Parquet files, multiclass; diabetes: one Parquet file, regression
    days = tmp_path / "wine"
    wine_parquet_days(days)
    out = run([mlops, "init", "wine", "--from", days, "--target", "target"], env).stdout
    assert "task multiclass" in out and "key 'bottle_id'" in out and "date 'tasted_on'" in out
    pq = tmp_path / "diabetes.parquet"
    diabetes_parquet(pq)
    out = run([mlops, "init", "diabetes", "--from", pq, "--target", "target"], env).stdout
    assert "task regression" in out and "key 'patient_id'" in out
    for name in NAMES:  # registry names of their own on the shared server; nothing else edited
        path = specs / f"{name}.yaml"
        spec = yaml.safe_load(path.read_text())
        spec["registered_model"] = f"{name}-{suffix}"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))

    out = run([mlops, "ingest", "breast_cancer", "--file", csv], env)
    assert "published batches/breast_cancer.csv (569 rows)" in out.stdout
    assert "auditing batches/breast_cancer.csv: 569 rows checked" in out.stderr
    out = run([mlops, "ingest", "wine", "--file", days], env)
    assert "published batches/wine-*.csv (5 files) (178 rows)" in out.stdout
    out = run([mlops, "ingest", "diabetes", "--file", pq], env)
    assert "published batches/diabetes.csv (442 rows)" in out.stdout

    # one run for the three (each CLI call loads Dagster and the code location again)
    materialize(env, "--select", ",".join(f"*{name}/model_evaluation" for name in NAMES))
    for name in NAMES:
        evaluation = meta(home, model_evaluation_key(name))
        assert evaluation["decision"] == "passed", evaluation
    trained = meta(home, trained_model_key("breast_cancer"))
    assert trained["roc_auc"] > 0.9 and trained["model_version"] == 1
    assert meta(home, trained_model_key("wine"))["roc_auc_ovr"] > 0.9
    assert meta(home, trained_model_key("diabetes"))["r2"] > 0.1

    # ---- batch predictions of one day, by the production version
    materialize(env, "--select", "breast_cancer/batch_predictions", "--partition", "2026-11-03")
    batch = meta(home, batch_predictions_key("breast_cancer"))
    assert batch["model_version"] == 1
    assert batch["row_count"] == 81  # rows 2, 9, 16, ... of 569 are dated 2026-11-03

    # ---- served over HTTP; its answers monitored
    port = free_port()
    log = tmp_path / "serve.log"
    proc = serve(env, port, mlflow_server.url, log)
    url = f"http://127.0.0.1:{port}"
    try:
        sent = {
            "breast_cancer": pd.read_csv(csv),
            "wine": pd.concat([pd.read_parquet(f) for f in sorted(days.iterdir())]),
        }
        answered = {}
        for name, rows in sent.items():
            features = yaml.safe_load((specs / f"{name}.yaml").read_text())["features"]
            records = json.loads(rows[features].head(150).to_json(orient="records"))
            for first in range(0, len(records), 50):
                r = httpx.post(
                    f"{url}/predict",
                    json={"model": name, "records": records[first : first + 50]},
                    timeout=30,
                )
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["model_version"] == "1"
            answered[name] = len(records)
            if name == "wine":  # the class and P(class) of every class
                assert set(body["predictions"]) <= {0, 1, 2}
                assert set(body["probabilities"][0]) == {"0", "1", "2"}
            else:
                assert set(body["predictions"]) <= {0, 1}
        assert (
            "mean radius" in yaml.safe_load((specs / "breast_cancer.yaml").read_text())["features"]
        )

        for name in answered:
            spec = get_spec(name, str(specs))
            log_store = LocalStore(
                home / "mlops-data" / "lakefs-local",
                predictions_repository(spec.dataset.repository),
            )

            def logged(spec=spec, log_store=log_store, n=answered[name]):
                try:
                    return len(current_window(log_store, spec, "1", 5000)) >= n
                except Exception:  # the repository is created by the first commit
                    return False

            wait_until(f"{name}'s answers in the committed log", logged, 120, proc, log)
        materialize(env, "--select", ",".join(f"{name}/drift_report" for name in answered))
    finally:
        stop(proc)
    for name, n in answered.items():
        report = meta(home, drift_report_key(name))
        assert report["window_rows"] == n, report
        assert 0 <= report["drift_share"] <= 1
    assert "mean radius" in meta(home, drift_report_key("breast_cancer"))["columns"]
    assert "probability_2" in meta(home, drift_report_key("wine"))["columns"]
