"""Bring your own model whose binary target is text, not 0/1, the route of test_byo_model.py
through the real CLIs on a fresh DAGSTER_HOME against a real MLflow server.

scikit-learn's breast cancer data, twice:
- ``diagnosis``: "malignant"/"benign", as one CSV per day. `mlops init` reads the user's whole
  export and names the minority class, "malignant", positive; the days before 2026-11-06 are
  ingested as two batches, the model is trained and gated (threshold maximising F1), and the
  last two days, unseen, are served over HTTP.
- ``benign``: "yes"/"no", one CSV. `mlops init` names "yes" positive (it says so); the reviewer
  sets positive_class: 'no' (the event they look for), which makes the positive class the
  first of the model's classes.

Both models answer their labels and P(positive) (from ONNX Runtime, after the gate's parity
check); the answers are logged, the true labels arrive later as text, and one materialize
run computes each model's drift report and live performance on them.
"""

import datetime as dt
import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from mlops_assets.defs.keys import (
    drift_report_key,
    model_evaluation_key,
    production_performance_key,
    trained_model_key,
)
from mlops_assets.monitoring.labels import commit_labels, labels_repository
from mlops_assets.monitoring.windows import current_window, served_rows
from mlops_assets.serving.predlog import predictions_repository
from mlops_assets.specs.model import get_spec
from mlops_assets.store.local import LocalStore
from mlops_assets_tests.processes import BIN, free_port, fresh_home, stop, wait_until
from mlops_assets_tests.test_e2e.test_byo_model import materialize, meta, run, serve

pytestmark = pytest.mark.e2e
FIRST_DAY = dt.date(2026, 11, 1)  # explicit: the test never depends on the calendar
DAYS = 7
SERVED_FROM = dt.date(2026, 11, 6)  # the last two days are served, never trained on
TOKEN = "string-labels-admin-token"


def breast_cancer(target: str, labels: tuple[str, str]) -> pd.DataFrame:
    """scikit-learn's breast cancer data with an id, a date and the outcome as text:
    ``labels`` are (malignant, benign), scikit-learn's 0 and 1."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer(as_frame=True).frame
    outcome = np.where(d.pop("target") == 0, labels[0], labels[1])
    d.insert(0, "sample_id", [f"bc-{i:04d}" for i in range(len(d))])
    d.insert(1, "seen_on", [str(FIRST_DAY + dt.timedelta(days=i % DAYS)) for i in range(len(d))])
    d[target] = outcome
    return d


def daily_csvs(data: pd.DataFrame, folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for day, part in data.groupby("seen_on"):
        paths.append(folder / f"{day}.csv")
        part.to_csv(paths[-1], index=False)
    return paths


def answer(url: str, name: str, records: list[dict], headers: dict | None = None) -> list[dict]:
    """Each /predict answer, 50 rows at a time."""
    out = []
    for first in range(0, len(records), 50):
        body = {"model": name, "records": records[first : first + 50]}
        r = httpx.post(f"{url}/predict", json=body, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


@pytest.mark.timeout(1200)
def test_binary_targets_with_text_labels_train_serve_and_are_monitored(tmp_path, mlflow_server):
    specs = tmp_path / "specs"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = fresh_home(
        tmp_path,
        MLFLOW_TRACKING_URI=mlflow_server.url,
        MLOPS_SPECS_DIR=str(specs),
        MLOPS_SERVING_URL=url,  # monitoring hands its figures to the server this test starts
        MLOPS_SERVING_TOKEN=TOKEN,
    )
    home = Path(env["DAGSTER_HOME"])
    mlops = BIN / "mlops"
    suffix = tmp_path.name[-20:].replace("_", "-")

    # ---- malignant/benign: the user's export for init, then one CSV per day
    dx = breast_cancer("diagnosis", ("malignant", "benign"))
    export = tmp_path / "diagnoses.csv"
    dx.to_csv(export, index=False)
    days = daily_csvs(dx, tmp_path / "days")
    out = run([mlops, "init", "diagnosis", "--from", export, "--target", "diagnosis"], env).stdout
    assert "task classification" in out and "30 feature(s)" in out, out
    assert (
        "Target 'diagnosis' has the labels ['benign', 'malignant']; positive class 'malignant' "
        "(the minority class, 37% of the sample)" in out
    ), out
    assert "set positive_class: 'benign'" in out

    # ---- yes/no: "yes" is positive by its name, though the majority; the reviewer flips it
    yes_no = breast_cancer("benign", ("no", "yes"))
    small = tmp_path / "benign.csv"
    yes_no.to_csv(small, index=False)
    out = run([mlops, "init", "benign", "--from", small, "--target", "benign"], env).stdout
    assert "positive class 'yes' ('yes' against 'no')" in out, out

    edits = {
        "diagnosis": {"threshold": {"maximize": "f1"}},  # a reviewer's choice: F1 at the cut
        "benign": {"positive_class": "no"},  # the event looked for: not benign
    }
    for name, edit in edits.items():
        path = specs / f"{name}.yaml"
        spec = yaml.safe_load(path.read_text())
        written = {"diagnosis": "malignant", "benign": "yes"}[name]
        assert spec["task"] == "classification" and spec["positive_class"] == written, spec
        target = spec["dataset"]["columns"][spec["target"]]
        assert target["dtype"] == "category" and len(target["allowed"]) == 2, target
        spec.update(edit, registered_model=f"{name}-{suffix}")
        path.write_text(yaml.safe_dump(spec, sort_keys=False))

    # ---- write-audit-publish: two batches of days, then the yes/no CSV
    trained_days = [p for p in days if p.stem < str(SERVED_FROM)]
    out = run([mlops, "ingest", "diagnosis", "--file", trained_days[0]], env)
    assert "published batches/2026-11-01.csv (82 rows)" in out.stdout, out.stdout
    later = tmp_path / "later"
    later.mkdir()
    for p in trained_days[1:]:
        (later / p.name).write_bytes(p.read_bytes())
    out = run([mlops, "ingest", "diagnosis", "--file", later], env)
    assert "published batches/later-*.csv (4 files) (325 rows)" in out.stdout, out.stdout
    out = run([mlops, "ingest", "benign", "--file", small], env)
    assert "published batches/benign.csv (569 rows)" in out.stdout

    materialize(env, "--select", "*diagnosis/model_evaluation,*benign/model_evaluation")
    for name in edits:
        evaluation = meta(home, model_evaluation_key(name))
        assert evaluation["decision"] == "passed", evaluation
        trained = meta(home, trained_model_key(name))
        assert trained["roc_auc"] > 0.9 and trained["f1"] > 0.8, trained
        assert trained["onnx_conversion"] == "converted", trained
    trained = meta(home, trained_model_key("diagnosis"))
    assert trained["train_rows"] + trained["holdout_rows"] == 407  # the days before 11-06
    assert trained["threshold_rule"].startswith("maximize f1")
    threshold = trained["decision_threshold"]

    # ---- served over HTTP: the labels and P(positive), by ONNX Runtime after parity
    log = tmp_path / "serve.log"
    proc = serve(env, port, mlflow_server.url, log)
    try:
        served = {
            "diagnosis": dx[dx["seen_on"] >= str(SERVED_FROM)],  # unseen days
            "benign": yes_no.head(150),
        }
        positive = {"diagnosis": "malignant", "benign": "no"}
        sent: dict[str, list[tuple[str, int, str]]] = {}  # (request id, row, true label)
        for name, rows in served.items():
            spec = get_spec(name, str(specs))
            about = httpx.get(f"{url}/v2/models/{name}", timeout=10).json()
            assert about["parameters"]["runtimes"] == {"1": "onnxruntime"}, about
            assert about["parameters"]["positive_classes"] == {"1": positive[name]}, about
            cut = about["parameters"]["decision_thresholds"]["1"]
            assert cut == (threshold if name == "diagnosis" else 0.5)
            records = json.loads(rows[list(spec.features)].to_json(orient="records"))
            answers = answer(url, name, records)
            labels = [p for a in answers for p in a["predictions"]]
            proba = [p for a in answers for p in a["probabilities"]]
            assert {a["model_version"] for a in answers} == {"1"}
            assert set(labels) == set(spec.dataset.columns[spec.target].allowed), labels
            # the label is the positive class exactly where P(positive) reaches the threshold
            assert all(
                (lab == positive[name]) == (p >= cut) for lab, p in zip(labels, proba, strict=True)
            )
            truth = rows[spec.target].tolist()
            # P(positive), not P(the other): it ranks the positive rows first
            auc = roc_auc_score([t == positive[name] for t in truth], proba)
            assert auc > 0.9, auc
            right = sum(lab == t for lab, t in zip(labels, truth, strict=True))
            assert right >= 0.85 * len(truth), (right, len(truth))
            sent[name] = [
                (a["request_id"], i, t)
                for k, a in enumerate(answers)
                for i, t in enumerate(truth[50 * k : 50 * (k + 1)])
            ]

        # V2: the labels as a BYTES tensor, P(positive) as predict_proba (marked as a test's
        # traffic, so it stays out of the monitoring windows)
        synthetic = {"X-Mlops-Synthetic": "test"}
        spec = get_spec("benign", str(specs))
        rows = json.loads(served["benign"][list(spec.features)].head(3).to_json(orient="records"))
        inputs = [
            {"name": f, "datatype": "FP64", "shape": [3], "data": [r[f] for r in rows]}
            for f in spec.features
        ]
        v2 = httpx.post(
            f"{url}/v2/models/benign/infer", json={"inputs": inputs}, headers=synthetic, timeout=30
        )
        assert v2.status_code == 200, v2.text
        tensors = {o["name"]: o for o in v2.json()["outputs"]}
        first = answer(url, "benign", rows, synthetic)[0]
        assert tensors["predict"]["datatype"] == "BYTES"
        assert tensors["predict"]["data"] == first["predictions"]
        assert tensors["predict_proba"]["data"] == pytest.approx(first["probabilities"])

        # ---- the log holds the labels answered; the true labels arrive later, as text
        for name in served:
            spec = get_spec(name, str(specs))
            n = len(sent[name])
            data = home / "mlops-data" / "lakefs-local"
            log_store = LocalStore(data, predictions_repository(spec.dataset.repository))

            def logged(spec=spec, log_store=log_store, n=n):
                try:
                    return len(current_window(log_store, spec, "1", 5000)) >= n
                except Exception:  # the repository is created by the first commit
                    return False

            wait_until(f"{name}'s answers in the committed log", logged, 120, proc, log)
            answered = {r["prediction"] for r in served_rows(log_store, spec, "1")}
            assert answered == set(spec.dataset.columns[spec.target].allowed), answered
            labels = [{"request_id": r, "row": i, "label": t} for r, i, t in sent[name]]
            assert commit_labels(LocalStore(data, labels_repository(spec)), spec, labels)

        config = {
            "ops": {
                f"{name}__production_performance": {"config": {"min_rows": 100}} for name in served
            }
        }
        selection = [
            f"{name}/{a}" for name in served for a in ("drift_report", "production_performance")
        ]
        materialize(env, "--select", ",".join(selection), "--config-json", json.dumps(config))
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        stop(proc)

    for name, rows in served.items():
        n = len(rows)
        report = meta(home, drift_report_key(name))
        assert report["window_rows"] == n and report["reference_rows"] > 300, report
        assert 0 <= report["drift_share"] <= 1
        assert "| prediction |" in report["columns"] and "mean radius" in report["columns"]
        live = meta(home, production_performance_key(name))
        assert live["metric"] == "roc_auc" and live["labelled_rows"] == n, live
        assert live["live_roc_auc"] > 0.9, live
        assert live["evaluated_roc_auc"] == pytest.approx(
            meta(home, model_evaluation_key(name))["challenger_roc_auc"]
        )
        # handed to the server, which exports it for alerting
        assert f'mlops_live_score_change{{model="{name}"' in metrics, metrics[-2000:]
