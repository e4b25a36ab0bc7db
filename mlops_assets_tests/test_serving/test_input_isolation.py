"""Isolation from bad input and bad models: a client that sends garbage, a row the model
cannot take or a version that cannot be loaded only ever hurts itself."""

import asyncio
import json
import re
import threading
from pathlib import Path

import httpx
import pytest
import yaml

from mlops_assets.serving.app import Batcher, Served
from mlops_assets.serving.schema import InputSchema
from mlops_assets.specs.model import SPECS_DIR, get_spec, load_spec_file
from mlops_assets.training.tracking import Tracking
from mlops_assets_tests.processes import BIN, free_port, start, stop, wait_until
from mlops_assets_tests.test_serving.conftest import TOKEN, _ready, serve_env


def _post(url: str, body, **kw) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/predict", content=content, timeout=30, **kw)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"tenure_months": -5}, "tenure_months", "outside the spec's range"),
        ({"support_tickets": 51}, "support_tickets", "outside the spec's range"),
        ({"tenure_months": 1e300}, "tenure_months", "beyond float32 range"),
        ({"plan": "gold"}, "plan", "not one of the spec's"),
        ({"region": None}, "region", "is null"),
    ],
)
def test_the_specs_rules_are_a_422_naming_field_and_row(
    server, registry, client, change, field, words
):
    good = registry.holdout["churn"][0]
    r = _post(server, {"model": "churn", "records": [good, {**good, **change}]})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    error = r.json()["error"]
    assert f"row 1: field '{field}'" in error and words in error
    assert "input_rules: flag" in error  # and what to do about it


def test_the_v2_route_enforces_the_same_rules(server, registry, client):
    rows = [registry.holdout["churn"][0], {**registry.holdout["churn"][1], "tenure_months": -1}]
    spec = get_spec("churn", registry.specs_dir)
    body = {"inputs": [{"name": f, "data": [r[f] for r in rows]} for f in spec.features]}
    r = httpx.post(f"{server}/v2/models/churn/infer", json=body)
    assert r.status_code == 422 and r.json()["field"] == "tenure_months"
    assert "row 1" in r.json()["error"]


HOSTILE = {
    "5,000-deep nesting": b'{"model": "churn", "records": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "1,000-deep nesting": b'{"model": "churn", "records": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    "deep nesting behind a NaN": b'{"a": NaN, "b": ' + b"[" * 900 + b"]" * 900 + b"}",
    "lone surrogate in a key": b'{"model": "churn", "records": [{"\\ud800x": 1}]}',
    "lone surrogate in a value": b'{"model": "churn", "records": [{"plan": "\\udc00"}]}',
    "surrogate after a NaN": b'{"model": "churn", "x": NaN, "records": [{"plan": "\\ud800"}]}',
    "invalid UTF-8": b'{"model": "churn", "records": [{"plan": "\xff\xfe"}]}',
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_json_is_a_4xx_never_a_5xx(server, client, name):
    r = _post(server, HOSTILE[name])
    assert 400 <= r.status_code < 500, r.text
    assert "error" in r.json()


@pytest.mark.parametrize(
    ("literal", "words"),
    [
        ("NaN", "is NaN"),
        ("Infinity", "send a finite number"),
        ("-Infinity", "send a finite number"),
        ("1e999", "send a finite number"),
        ("1" + "0" * 400, "too large for a 64-bit float"),
        ("1e300", "beyond float32 range"),
    ],
)
def test_huge_numbers_and_nan_literals_are_a_422_naming_the_field(
    server, registry, client, literal, words
):
    row = {**registry.holdout["churn"][0], "monthly_charges": "__X__"}
    text = json.dumps({"model": "churn", "records": [row]}).replace('"__X__"', literal)
    r = _post(server, text.encode())
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "monthly_charges" and words in r.json()["error"]


def test_a_surrogate_in_a_value_is_refused_not_answered_and_lost(server, registry, client):
    # It used to be answered 200 and then dropped by the log writer, which cannot encode it.
    row = {**registry.holdout["churn"][0], "plan": "\ud800"}
    text = json.dumps({"model": "churn", "records": [row]})  # ensure_ascii: a \ud800 escape
    r = _post(server, text.encode())
    assert r.status_code == 400 and "surrogate" in r.json()["error"]


def test_row_limits_are_checked_before_any_validation(server, client):
    # 10,001 rows that are not even objects: the limit answers, not the validation
    r = _post(server, {"model": "churn", "records": [1] * 10_001})
    assert r.status_code == 413 and "at most 10000" in r.json()["error"]
    body = {"inputs": [{"name": "tenure_months", "data": ["x"] * 10_001}]}
    r = httpx.post(f"{server}/v2/models/churn/infer", json=body)
    assert r.status_code == 413 and "at most 10000" in r.json()["error"]


def test_pinning_a_version_needs_the_admin_token(server, registry, client):
    challenger = registry.versions[("churn", "challenger")]
    champion = registry.versions[("churn", "champion")]
    client.deploy("churn", production=champion, candidate=challenger, weight=0.0, mode="blue_green")
    body = {"model": "churn", "records": registry.holdout["churn"][:1]}
    pin = {"X-Model-Version": challenger}
    r = _post(server, body, headers=pin)
    assert r.status_code == 401
    assert "X-Model-Version" in r.json()["error"] and "Bearer" in r.json()["error"]
    r = _post(server, body, headers={**pin, "Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "refused the admin token" in r.json()["error"]
    r = _post(server, body, headers={**pin, "Authorization": TOKEN})  # no "Bearer " scheme
    assert r.status_code == 401 and "Bearer" in r.json()["error"]
    r = _post(server, body, headers={**pin, "Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["model_version"] == challenger
    # without a pin nobody needs a token, and the standby gets no traffic
    r = _post(server, body)
    assert r.status_code == 200 and r.json()["model_version"] == champion


def test_admin_routes_refuse_a_bare_token(server, client):
    r = httpx.get(f"{server}/admin/deployments/churn", headers={"Authorization": TOKEN})
    assert r.status_code == 401 and "Bearer" in r.json()["error"]
    ok = httpx.get(
        f"{server}/admin/deployments/churn", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert ok.status_code == 200


def test_a_failed_micro_batch_is_retried_request_by_request(registry):
    """The real batcher and the real registered forest: three requests in one batch, the middle
    one with a number the trees cast to inf in float32. Only it fails; the others get exactly
    what they get alone."""
    spec = get_spec("churn", registry.specs_dir)
    version = registry.versions[("churn", "champion")]
    pipeline = Tracking(registry.tracking_uri).load_model(spec.model_name, version)
    served = Served(spec, InputSchema(spec))
    rows = registry.holdout["churn"][:3]
    bad = {**rows[1], "tenure_months": 1e300}

    async def run(requests):
        batcher = Batcher(served, version, pipeline)
        futures = [batcher.submit(served.schema.columns_from_records(r), len(r)) for r in requests]
        results = await asyncio.gather(*futures, return_exceptions=True)
        return results, batcher.retried

    alone = [asyncio.run(run([[r]]))[0][0] for r in (rows[0], rows[2])]
    results, retried = asyncio.run(run([[rows[0]], [bad], [rows[2]]]))
    assert retried == 1
    assert isinstance(results[1], ValueError) and "infinity" in str(results[1]).lower()
    for got, expected in zip((results[0], results[2]), alone, strict=True):
        assert got[0].tolist() == expected[0].tolist()
        assert got[1].tolist() == expected[1].tolist()


def _copy_specs(registry, root: Path, serving: dict | None = None, rename: dict | None = None):
    out = root / "specs"
    out.mkdir()
    for f in Path(registry.specs_dir).glob("*.yaml"):
        data = yaml.safe_load(f.read_text())
        if serving and data["name"] in serving:
            data["serving"] = serving[data["name"]]
        if rename and data["name"] in rename:
            data["registered_model"] = rename[data["name"]]
        (out / f.name).write_text(yaml.safe_dump(data))
    return str(out)


def _start(registry, tmp_path: Path, specs_dir: str, poll: float, probe: str):
    port = free_port()
    cmd = [str(BIN / "mlops"), "serve", "--port", str(port), "--poll-seconds", str(poll)]
    env = serve_env(registry, MLOPS_SPECS_DIR=specs_dir, MLOPS_DATA_DIR=str(tmp_path / "data"))
    log = tmp_path / "serve.log"
    proc = start(cmd, env, log)
    url = f"http://127.0.0.1:{port}"
    wait_until("inference server", lambda: _ready(f"{url}{probe}"), 120, proc, log)
    return proc, url


def _counter(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m and all(p in m.group(1).split(",") for p in want.split(",")):
            total += float(m.group(2))
    return total


def test_flag_serves_and_counts_and_a_bad_row_fails_only_its_own_request(registry, tmp_path):
    """Six clients send good rows while one sends tenure_months 1e300 under the `flag`
    policy: it is served (and counted), the forest fails on it, and only that client gets
    errors, whatever batch its requests shared."""
    specs_dir = _copy_specs(registry, tmp_path, serving={"churn": {"input_rules": "flag"}})
    proc, url = _start(registry, tmp_path, specs_dir, 0, "")
    good_rows = registry.holdout["churn"][:30]
    bad = {**registry.holdout["churn"][0], "tenure_months": 1e300}
    codes: dict[str, list[int]] = {"good": [], "bad": []}
    stop_event = threading.Event()

    def send(kind: str, rows):
        with httpx.Client(base_url=url, timeout=30) as http:
            i = 0
            while not stop_event.is_set():
                r = http.post("/predict", json={"model": "churn", "records": [rows[i % len(rows)]]})
                codes[kind].append(r.status_code)
                i += 1

    threads = [threading.Thread(target=send, args=("good", good_rows)) for _ in range(6)]
    threads.append(threading.Thread(target=send, args=("bad", [bad])))
    try:
        for t in threads:
            t.start()
        wait_until("traffic", lambda: len(codes["bad"]) >= 60, 120, proc, tmp_path / "serve.log")
        stop_event.set()
        for t in threads:
            t.join(60)
        # a plain out-of-range value is served and counted, not refused
        r = httpx.post(
            f"{url}/predict",
            json={"model": "churn", "records": [{**good_rows[0], "tenure_months": 300}]},
        )
        assert r.status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        stop_event.set()
        stop(proc)
    assert codes["good"] and set(codes["good"]) == {200}
    assert set(codes["bad"]) == {500}
    assert _counter(
        metrics, "mlops_input_rule_violations_total", field="tenure_months", rule="float32"
    ) == len(codes["bad"])
    assert (
        _counter(metrics, "mlops_input_rule_violations_total", field="tenure_months", rule="range")
        == 1
    )
    # the culprit shared batches with the good clients (7 clients, one event loop)
    assert _counter(metrics, "mlops_batch_retries_total", model="churn") > 0
    # each failure is charged to the model and version that failed (a rollout's Prometheus
    # analysis reads these labels), never to an empty label
    failed = _counter(metrics, "mlops_requests_total", model="churn", code="500")
    assert failed == len(codes["bad"])
    assert _counter(metrics, "mlops_requests_total", version="", code="500") == 0


def _register_copy(tracking_uri: str, source_name: str, version: str, name: str) -> str:
    """Another registered model's version, registered again under ``name`` (same files)."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    source = MlflowClient(tracking_uri).get_model_version(source_name, version).source
    return str(mlflow.register_model(source, name, await_registration_for=60).version)


def _register_broken(tracking_uri: str, name: str) -> str:
    """A registered version that cannot be loaded: no skops file behind it."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run() as run:
        mlflow.log_text("not a model", "model/README.txt")
    c = MlflowClient(tracking_uri)
    c.create_registered_model(name)
    mv = c.create_model_version(
        name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    )
    return str(mv.version)


def test_one_model_that_cannot_load_never_stops_the_others(registry, tmp_path):
    tag = tmp_path.name[-12:].replace("_", "-")
    churn_name, demand_name = f"churn-iso-{tag}", f"demand-broken-{tag}"
    churn = get_spec("churn", registry.specs_dir)
    tracking = Tracking(registry.tracking_uri)
    first = _register_copy(
        registry.tracking_uri,
        churn.model_name,
        registry.versions[("churn", "champion")],
        churn_name,
    )
    tracking.promote(churn_name, first)
    tracking.promote(demand_name, _register_broken(registry.tracking_uri, demand_name))
    specs_dir = _copy_specs(registry, tmp_path, rename={"churn": churn_name, "demand": demand_name})
    # startup: churn serves although demand cannot be loaded
    proc, url = _start(registry, tmp_path, specs_dir, 0.5, "/v2/models/churn")
    try:
        r = httpx.get(f"{url}/v2/models/demand/ready")
        assert r.status_code == 503 and "no skops model file" in r.json()["reason"]
        health = httpx.get(f"{url}/v2/health/ready")
        assert health.status_code == 200
        assert set(health.json()["not_ready"]) == {"demand"}
        answer = httpx.post(
            f"{url}/predict", json={"model": "demand", "records": registry.holdout["demand"][:1]}
        )
        assert answer.status_code == 503 and "no skops model file" in answer.json()["error"]
        r = httpx.post(
            f"{url}/predict", json={"model": "churn", "records": registry.holdout["churn"][:1]}
        )
        assert r.status_code == 200 and r.json()["model_version"] == first

        # the poll loop: churn's promotion is picked up while demand keeps failing on its own
        second = _register_copy(
            registry.tracking_uri,
            churn.model_name,
            registry.versions[("churn", "challenger")],
            churn_name,
        )
        tracking.promote(churn_name, second)

        def churn_moved() -> bool:
            meta = httpx.get(f"{url}/v2/models/churn").json()
            return meta["versions"] == [second]

        wait_until("churn's promotion served", churn_moved, 60, proc, tmp_path / "serve.log")
        metrics = httpx.get(f"{url}/metrics").text
        assert _counter(metrics, "mlops_model_load_failures_total", model="demand") >= 2
        assert _counter(metrics, "mlops_model_load_failures_total", model="churn") == 0
        assert httpx.get(f"{url}/v2/models/demand/ready").status_code == 503
    finally:
        stop(proc)


def test_a_bad_serving_section_names_the_spec_file_and_field(tmp_path):
    source = SPECS_DIR / "churn.yaml"
    data = yaml.safe_load(source.read_text())
    data["serving"] = {"input_rules": "warn"}
    path = tmp_path / "churn.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"churn\.yaml: serving\.input_rules: Input should be"):
        load_spec_file(path)
