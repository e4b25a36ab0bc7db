"""The inference server over HTTP on loopback."""

import json
import math
import re
import threading

import httpx
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_assets.specs.model import get_spec
from mlops_assets.training.tracking import Tracking
from mlops_assets.training.train import decision_threshold, inputs


def test_predictions_equal_the_registered_model_in_process(client, registry):
    for name in ("churn", "demand"):
        spec = get_spec(name, registry.specs_dir)
        rows = registry.holdout[name][:50]
        answer = client.predict(name, rows)
        assert answer["status"] == 200
        assert answer["model_version"] == registry.versions[(name, "champion")]
        tracking = Tracking(registry.tracking_uri)
        model = tracking.load_model(spec.model_name, answer["model_version"])
        frame = inputs(pd.DataFrame(rows), spec)
        if spec.task == "classification":
            expected = model.predict_proba(frame)[:, 1]
            assert answer["probabilities"] == expected.tolist()
            # labels at the threshold chosen in training and kept in the model, not at 0.5
            assert answer["predictions"] == model.predict(frame).tolist()
            assert decision_threshold(model) != 0.5 and spec.threshold.maximize == "f1"
        else:
            assert answer["predictions"] == model.predict(frame).tolist()


def test_open_inference_protocol(server, registry, client):
    rows = registry.holdout["demand"][:5]
    body = {
        "id": "req-1",
        "inputs": [
            {
                "name": f,
                "shape": [5],
                "datatype": "FP64" if f != "store_type" else "BYTES",
                "data": [r[f] for r in rows],
            }
            for f in rows[0]
        ],
    }
    r = httpx.post(f"{server}/v2/models/demand/infer", json=body)
    assert r.status_code == 200
    out = r.json()
    assert out["id"] == "req-1" and out["model_name"] == "demand"
    (predict,) = out["outputs"]
    assert predict["name"] == "predict" and predict["shape"] == [5]
    assert predict["data"] == client.predict("demand", rows)["predictions"]
    assert httpx.get(f"{server}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server}/v2/health/ready").status_code == 200
    meta = httpx.get(f"{server}/v2/models/churn").json()
    assert [i["name"] for i in meta["inputs"]] == list(get_spec("churn").features)
    assert httpx.get(f"{server}/v2/models/churn/ready").json()["ready"] is True
    assert httpx.get(f"{server}/v2/models/nope").status_code == 404


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"tenure_months": "ten"}, 422, "tenure_months"),
        ({"colour": "red"}, 422, "colour"),
        ({"plan": None}, 422, "plan"),
        ({"plan": 3}, 422, "plan"),
        ({"tenure_months": True}, 422, "tenure_months"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(server, registry, client, change, status, field):
    row = {**registry.holdout["churn"][0], **change}
    r = httpx.post(f"{server}/predict", json={"model": "churn", "records": [row]})
    assert r.status_code == status
    assert r.json()["field"] == field and field in r.json()["error"]


def test_missing_field_nan_size_and_unknown_model(server, registry, client):
    row = dict(registry.holdout["churn"][0])
    del row["region"]
    r = httpx.post(f"{server}/predict", json={"model": "churn", "records": [row]})
    assert (r.status_code, r.json()["field"]) == (422, "region")
    nan = dict(registry.holdout["churn"][0], monthly_charges=float("nan"))
    body = json.dumps({"model": "churn", "records": [nan]})  # NaN literal: not allowed here
    r = httpx.post(f"{server}/predict", content=body)
    assert (r.status_code, r.json()["field"]) == (422, "monthly_charges")
    usage_nan = dict(registry.holdout["churn"][0], usage_hours=float("nan"))  # nullable column
    r = httpx.post(
        f"{server}/predict", content=json.dumps({"model": "churn", "records": [usage_nan]})
    )
    assert r.status_code == 200
    r = httpx.post(f"{server}/predict", json={"model": "nope", "records": [row]})
    assert r.status_code == 404
    many = [registry.holdout["churn"][0]] * 10_001
    r = httpx.post(f"{server}/predict", json={"model": "churn", "records": many})
    assert r.status_code == 413 and "at most 10000" in r.json()["error"]
    r = httpx.post(f"{server}/predict", content=b"x" * (9 * 1024 * 1024))
    assert r.status_code == 413
    r = httpx.post(f"{server}/predict", content=b"{not json")
    assert r.status_code == 400


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"model": st.sampled_from(["churn", "demand", "x"]), "records": json_values}
        ),
        st.fixed_dictionaries(
            {
                "model": st.just("churn"),
                "records": st.lists(
                    st.dictionaries(
                        st.sampled_from(
                            [
                                "tenure_months",
                                "monthly_charges",
                                "support_tickets",
                                "usage_hours",
                                "plan",
                                "region",
                                "extra",
                            ]
                        ),
                        json_values,
                        max_size=7,
                    ),
                    min_size=1,
                    max_size=3,
                ),
            }
        ),
    ),
    path=st.sampled_from(["/predict", "/v2/models/churn/infer", "/v2/models/demand/infer"]),
)
def test_fuzzed_inputs_never_get_a_5xx(server, client, body, path):
    r = httpx.post(f"{server}{path}", content=json.dumps(body))
    assert r.status_code < 500, (body, r.text)
    if r.status_code >= 400:
        assert "error" in r.json()


# bytes HTTP allows in a header value: visible ASCII and obs-text (0x80-0xFF)
header_bytes = st.lists(
    st.sampled_from([*range(0x21, 0x7F), *range(0x80, 0x100)]), min_size=1, max_size=12
).map(bytes)
nasty = st.one_of(
    st.sampled_from([2**63, 2**64 + 1, 10**30, 10**309, -(10**400)]).map(str),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0", "1E-400", '"\\u0000"']),
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    field=st.sampled_from(["tenure_months", "monthly_charges", "usage_hours", "plan"]),
    literal=nasty,
    model=st.one_of(st.just('"churn"'), st.sampled_from(['["churn"]', "{}", "1", "null"])),
    version=header_bytes,
    token=header_bytes,
)
def test_raw_json_literals_and_odd_headers_never_get_a_5xx(
    server, client, registry, field, literal, model, version, token
):
    row = dict(registry.holdout["churn"][0])
    row[field] = "__X__"
    text = json.dumps({"records": [row]})[:-1] + f', "model": {model}}}'
    text = text.replace('"__X__"', literal)
    headers = {"X-Model-Version": version, "Authorization": b"Bearer " + token}
    r = httpx.post(f"{server}/predict", content=text, headers=headers)
    assert r.status_code < 500, (text, r.text)
    r = httpx.put(f"{server}/admin/deployments/churn", content=b"{}", headers=headers)
    assert r.status_code in (401, 422), r.text
    infer = {"id": 10**30, "inputs": []}
    r = httpx.post(f"{server}/v2/models/churn/infer", content=json.dumps(infer))
    assert r.status_code == 422


def test_admin_needs_the_token(server, client):
    r = httpx.put(f"{server}/admin/deployments/churn", json={"production": "1"})
    assert r.status_code == 401
    r = httpx.put(
        f"{server}/admin/deployments/churn",
        json={"production": "1"},
        headers={"Authorization": "Bearer wrong"},
    )
    assert r.status_code == 401


def test_canary_split_is_within_statistical_bounds(client, registry):
    champion = registry.versions[("churn", "champion")]
    challenger = registry.versions[("churn", "challenger")]
    client.deploy("churn", production=champion, candidate=challenger, weight=0.3, mode="canary")
    rows = registry.holdout["churn"][:1]
    n = 600
    answers = [client.predict("churn", rows)["model_version"] for _ in range(n)]
    share = answers.count(challenger) / n
    sigma = math.sqrt(0.3 * 0.7 / n)
    assert abs(share - 0.3) < 4 * sigma, share  # 4 sigma: fails by chance 6 times in 100,000
    assert set(answers) == {champion, challenger}


def test_hot_swap_under_load_fails_no_request(server, client, registry):
    champion = registry.versions[("churn", "champion")]
    challenger = registry.versions[("churn", "challenger")]
    rows = registry.holdout["churn"][:2]
    stop = threading.Event()
    results: list[tuple[int, str]] = []
    errors: list[str] = []

    def load():
        with httpx.Client(base_url=server, timeout=30) as http:
            while not stop.is_set():
                try:
                    r = http.post("/predict", json={"model": "churn", "records": rows})
                    results.append((r.status_code, r.json().get("model_version", "")))
                except httpx.HTTPError as e:
                    errors.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        third = registry.versions[("churn", "third")]
        cycle = [challenger, third, champion]  # three versions: unloading happens too
        for i in range(12):
            version = cycle[i % 3]
            if i % 4 == 3:  # and a canary now and then
                state = client.deploy(
                    "churn",
                    production=version,
                    candidate=cycle[(i + 1) % 3],
                    weight=0.5,
                    mode="canary",
                )
            else:
                state = client.deploy("churn", production=version)
            assert state["production"] == version
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert results and all(code == 200 for code, _ in results)
    assert {v for _, v in results} >= {champion, challenger, third}


SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\\n])*",?)*\})? '
    r"[-+]?([0-9.]+([eE][-+]?[0-9]+)?|Inf|NaN)$"
)


def test_metrics_parse_strictly_whatever_the_request_path(server, client):
    httpx.get(f"{server}/x%22y%0Az")
    httpx.get(f"{server}/another/odd/path")
    text = httpx.get(f"{server}/metrics").text
    for line in text.splitlines():
        assert line.startswith("# ") or SAMPLE.match(line), line
    assert "x%22y" not in text and 'route="other"' in text


def test_metrics_are_prometheus_text(server, client, registry):
    client.predict("churn", registry.holdout["churn"][:3])
    httpx.post(f"{server}/predict", json={"model": "churn", "records": [{"x": 1}]})
    text = httpx.get(f"{server}/metrics").text
    champion = registry.versions[("churn", "champion")]
    assert (
        f'mlops_requests_total{{route="/predict",model="churn",version="{champion}",code="200"}}'
        in text
    )
    assert "# TYPE mlops_request_seconds histogram" in text
    assert 'mlops_request_seconds_bucket{route="/predict",model="churn"' in text
    assert "mlops_prediction_value_bucket" in text
    assert 'mlops_errors_total{route="/predict",kind="bad_input"}' in text


def test_monitoring_figures_become_gauges_for_alerting(server, client):
    import time

    from mlops_assets.serving.client import ServingClient, ServingError
    from mlops_assets_tests.test_serving.conftest import TOKEN

    admin = ServingClient(server, TOKEN)
    created = time.time() - 3600
    admin.report_monitoring("churn", "7", drift_share=0.6, model_created=created)
    admin.report_monitoring("churn", "7", live_score_change=-0.05)
    text = httpx.get(f"{server}/metrics").text
    for line in text.splitlines():
        assert line.startswith("# ") or SAMPLE.match(line), line
    assert 'mlops_drift_share{model="churn",version="7"} 0.6' in text
    assert 'mlops_live_score_change{model="churn",version="7"} -0.05' in text
    (age,) = re.findall(r'mlops_model_age_seconds\{model="churn",version="7"\} (\S+)', text)
    assert 3600 <= float(age) < 3700

    # bad figures are refused, naming what is wrong; without the token, nothing at all
    for body, words in [
        ({"drift_share": 0.1}, "string 'version'"),
        ({"version": "7", "accuracy": 0.9}, "unknown figure 'accuracy'"),
        ({"version": "7", "drift_share": "high"}, "'drift_share' must be a number"),
    ]:
        r = httpx.put(
            f"{server}/admin/monitoring/churn",
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert r.status_code == 422 and words in r.text, r.text
    with pytest.raises(ServingError, match="refused the admin token"):
        ServingClient(server, "wrong").report_monitoring("churn", "7", drift_share=0.9)
    assert 'mlops_drift_share{model="churn",version="7"} 0.6' in httpx.get(f"{server}/metrics").text
