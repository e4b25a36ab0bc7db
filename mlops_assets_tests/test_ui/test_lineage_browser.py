"""The lineage in the real Dagster UI, in a real browser: every asset drawn in the global
lineage graph, and the model's page showing the MLflow run and the lakeFS commit it was trained
on, the drift report linking back to them. Writes docs/lineage.png and docs/model-asset.png.

Everything is real: a fresh DAGSTER_HOME, the pipeline materialized by `dagster asset
materialize`, the session's MLflow server, a prediction-log window answered by the production
version, `dagster-webserver`, and Debian's chromium driven by Playwright.
"""

import datetime as dt
import json
import os
import re
import time
import urllib.request
from pathlib import Path

import pytest

from mlops_assets.defs.keys import ASSET_NAMES, drift_report_key, trained_model_key
from mlops_assets.demo.seeding import seed_demo
from mlops_assets.demo.simulator import simulate_batch
from mlops_assets.serving.predlog import PredictionLog, predictions_repository, store_committer
from mlops_assets.specs.model import get_spec
from mlops_assets.store.local import LocalStore
from mlops_assets.training.tracking import PRODUCTION, Tracking
from mlops_assets.training.train import inputs, predictions
from mlops_assets_tests.conftest import pin_mlflow_http_env
from mlops_assets_tests.processes import BIN, REPO, free_port, graphql, start, stop, wait_until
from mlops_assets_tests.test_e2e.test_cli_training import latest_meta, materialize
from mlops_assets_tests.test_training.conftest import unique_specs

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling home on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1600, "height": 1000}
DOCS = REPO / "docs"

LOCATION = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
NODES = "{ assetNodes { assetKey { path } groupName } }"


def _chromium() -> None:
    """Fail, never skip: scripts/test-deps.sh installs it and the test command runs that."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"{CHROMIUM} is missing: the lineage UI test drives Debian's chromium. Run "
            "scripts/test-deps.sh (apt-get install chromium); never `playwright install`."
        )


def _loaded_asset_nodes(port: int):
    """The asset nodes once the code location has loaded; a load error fails at once."""
    workspace = graphql(port, LOCATION).get("data", {}).get("workspaceOrError") or {}
    entries = workspace.get("locationEntries") or []
    if not entries or any(e["loadStatus"] != "LOADED" for e in entries):
        return None
    for e in entries:
        if e["locationOrLoadError"]["__typename"] == "PythonError":
            raise AssertionError(
                f"code location {e['name']} failed to load: {e['locationOrLoadError']['message']}"
            )
    return graphql(port, NODES)["data"]["assetNodes"] or None


def _serve_window(tracking_uri: str, data_dir: Path, spec, rows: int = 400) -> str:
    """What the inference server logs: drifted traffic answered by the production version,
    committed into the predictions repository. Returns the version that answered."""
    tracking = Tracking(tracking_uri=tracking_uri)
    tracking.configure()
    version = tracking.version_by_alias(spec.model_name, PRODUCTION).version
    model = tracking.load_model(spec.model_name, version)
    day = dt.date(2026, 11, 20)
    frame = simulate_batch(spec.simulator, day, rows=rows, drift="covariate_shift")
    x = inputs(frame, spec)
    values = predictions(model, frame, spec)
    store = LocalStore(data_dir / "lakefs-local", predictions_repository(spec.dataset.repository))
    log = PredictionLog(
        data_dir / "serving-log",
        commit=store_committer(lambda _: store, {spec.name: store.repository}),
    )
    columns = {c: [None if v != v else v for v in x[c].tolist()] for c in spec.features}
    outputs = {"prediction": model.predict(x).tolist(), "probability": values.tolist()}
    log.append(spec.name, version, "req-ui-1", columns, outputs)
    log.close()
    return version


def _inside(box: dict | None) -> bool:
    """Whether an element's box lies wholly in the window (the screenshot shows it)."""
    return bool(box) and (
        box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= VIEWPORT["width"]
        and box["y"] + box["height"] <= VIEWPORT["height"]
    )


def _node_box(page, name: str):
    """The box of one asset in the zoomed-out lineage graph (colored by its status)."""
    label = page.locator("[class*=AssetNode_assetName]", has_text=re.compile(f"^{name}$"))
    return page.locator("[class*=AssetNode_minimalAssetNodeBox]", has=label)


def _metadata_value(page, key: str):
    """The value cell of one row of an asset page's metadata table."""
    return page.locator(f"xpath=//tr[td[1][normalize-space()='{key}']]/td[3]")


def test_lineage_graph_and_model_page_in_a_browser(tmp_path, mlflow_server, monkeypatch):
    _chromium()
    from playwright.sync_api import expect, sync_playwright

    t0 = time.monotonic()
    timings: dict[str, float] = {}

    def lap(what: str) -> None:
        timings[what] = round(time.monotonic() - t0, 1)

    # One model (churn) keeps the run short; its registered name is unique on the shared server.
    specs_dir = Path(unique_specs(tmp_path))
    for f in specs_dir.glob("*.yaml"):
        if f.stem != "churn":
            f.unlink()
    spec = get_spec("churn", str(specs_dir))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    data_dir = home / "mlops-data"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "LAKEFS_", "MLFLOW_"))
    }
    env.update(
        DAGSTER_HOME=str(home),
        MLOPS_SPECS_DIR=str(specs_dir),
        MLFLOW_TRACKING_URI=mlflow_server.url,
    )
    pin_mlflow_http_env(monkeypatch)  # restored after the test

    # 1. Data, features, model and gate, by the CLI on the fresh instance.
    done, rejected = seed_demo(
        LocalStore(data_dir / "lakefs-local", spec.dataset.repository),
        spec,
        6,
        250,
        end=dt.date(2026, 11, 19),  # explicit: the test never depends on the calendar
    )
    assert done == 6 and not rejected, [r.summary() for r in rejected]
    materialize(env, "*churn/model_evaluation")
    lap("trained and gated")

    # 2. The webserver loads the code location while a served window and its drift report are
    # made; the UI reads the instance live. (Not earlier: two processes creating the SQLite
    # storage of a brand-new DAGSTER_HOME at once race, "table kvs already exists".)
    port = free_port()
    web_log = tmp_path / "webserver.log"
    web = start(
        [
            str(BIN / "dagster-webserver"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            "mlops_assets.definitions",
        ],
        env,
        web_log,
    )
    try:
        serving = _serve_window(mlflow_server.url, data_dir, spec)
        materialize(env, "churn/drift_report")
        lap("drift report")
        model = latest_meta(home, trained_model_key("churn"))
        drift = latest_meta(home, drift_report_key("churn"))
        head = LocalStore(data_dir / "lakefs-local", spec.dataset.repository).head("main")
        assert model["lakefs_commit"] == head, (model["lakefs_commit"], head)
        assert drift["serving_version"] == serving == str(model["model_version"])

        # The code location loaded in the webserver: the graph to expect.
        nodes = wait_until(
            "dagster-webserver", lambda: _loaded_asset_nodes(port), 180, web, web_log
        )
        lap("webserver ready")
        keys = {tuple(n["assetKey"]["path"]) for n in nodes}
        groups = {n["groupName"] for n in nodes}
        assert keys == {("churn", name) for name in ASSET_NAMES}, sorted(keys)
        # The community sign-up dialog of a fresh instance would cover the graph; dismissed the
        # way its "Skip" button does it.
        assert graphql(port, "mutation { setNuxSeen }")["data"]["setNuxSeen"] is True

        base = f"http://127.0.0.1:{port}"
        DOCS.mkdir(exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                page.set_default_timeout(30_000)

                # 3. The global lineage graph: every asset drawn, every group expanded.
                page.goto(f"{base}/asset-groups")
                expect(page.get_by_text("Global asset lineage")).to_be_visible()
                page.get_by_text("Hide navigation").click()
                page.locator("button:has([aria-label=panel_show_right])").click()  # asset list
                page.keyboard.press("Alt+e")  # "Expand all groups" (⌥E)
                drawn = page.locator("[class*=AssetNode_assetName]")
                expect(drawn).to_have_count(len(keys))
                page.wait_for_timeout(500)  # the viewport re-fits the expanded graph
                names = []
                for node in drawn.all():
                    label = node.inner_text().strip()
                    if "…" in label:  # long names are truncated in the middle; hover shows all
                        first, last = label.split("…")
                        node.hover()
                        whole = page.get_by_role("tooltip").filter(
                            has_text=re.compile(f"^{re.escape(first)}\\w*{re.escape(last)}$")
                        )
                        expect(whole).to_have_count(1)
                        label = whole.inner_text().strip()
                    names.append(label)
                    box = node.bounding_box()
                    assert _inside(box), f"node {label!r} is drawn outside the window: {box}"
                assert sorted(("churn", n) for n in names) == sorted(keys), names
                for group in groups:  # the expanded group boxes, by their titles
                    expect(page.locator(f"svg [data-tooltip='{group}']").first).to_be_visible()
                # Status arrives by a second query: materialized green, the drifted report red
                # (its drift check failed with severity ERROR), the rest gray.
                for name, color in (
                    ("dataset", "green"),
                    ("features", "green"),
                    ("trained_model", "green"),
                    ("model_evaluation", "green"),
                    ("drift_report", "red"),
                    ("deployment", "gray"),  # never materialized: no server in this test
                ):
                    expect(_node_box(page, name)).to_have_attribute(
                        "style",
                        re.compile(f"--minimal-bg: var\\(--color-background-{color}\\)"),
                        timeout=60_000,  # a loaded 2-core machine: the second query is slow
                    )
                # Off the nodes, tooltip closed: the layout depends on the assets drawn, so try
                # a few empty-looking spots until no tooltip is open (one with 9 assets per
                # model put a node under the first spot).
                w, h = VIEWPORT["width"], VIEWPORT["height"]
                for x, y in ((w / 2, 150), (w - 20, h / 2), (w / 2, h - 20), (20, h - 20)):
                    page.mouse.move(x, y)
                    page.keyboard.press("Escape")
                    page.wait_for_timeout(500)
                    if page.get_by_role("tooltip").count() == 0:
                        break
                expect(page.get_by_role("tooltip")).to_have_count(0)
                page.screenshot(path=str(DOCS / "lineage.png"))
                lap("lineage graph")

                # 4. The model's page: the MLflow run it logged, the lakeFS commit it read.
                page.goto(f"{base}/assets/churn/trained_model")
                commit = _metadata_value(page, "lakefs_commit")
                expect(commit).to_have_text(model["lakefs_commit"])
                expect(_metadata_value(page, "mlflow_run_id")).to_have_text(model["mlflow_run_id"])
                link = _metadata_value(page, "mlflow_run_url").locator("a[href]").first
                href = link.get_attribute("href")
                assert href == model["mlflow_run_url"], (href, model["mlflow_run_url"])
                assert href.startswith(f"{mlflow_server.url}/#/experiments/")
                link.scroll_into_view_if_needed()
                page.screenshot(path=str(DOCS / "model-asset.png"))
                # The link leads to that run, and the run records the commit the page shows.
                run_id = href.rsplit("/", 1)[1]
                with urllib.request.urlopen(
                    f"{mlflow_server.url}/api/2.0/mlflow/runs/get?run_id={run_id}", timeout=10
                ) as r:
                    run = json.loads(r.read())["run"]
                tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
                assert run["info"]["status"] == "FINISHED"
                assert tags["lakefs.commit"] == model["lakefs_commit"]
                assert tags["dagster.asset_key"] == "churn/trained_model"

                # The drift report of what that version served, pointing back at its commit.
                page.goto(f"{base}/assets/churn/drift_report")
                expect(_metadata_value(page, "report")).to_have_text(drift["report"])
                expect(_metadata_value(page, "serving_version")).to_have_text(serving)
                expect(_metadata_value(page, "reference_commit")).to_have_text(
                    model["lakefs_commit"]
                )
                expect(_metadata_value(page, "window_rows")).to_have_text("400")
                report = Path(drift["report"]).read_text(encoding="utf-8")
                assert "<html" in report.lower() and "monthly_charges" in report
                # ...with links a person can click: the report itself (kept as an MLflow run),
                # and back to the model version that served the window.
                for name in ("report_url", "model_version_url", "mlflow_run_url"):
                    a = _metadata_value(page, name).locator("a[href]").first
                    assert a.get_attribute("href") == drift[name], (name, drift[name])
                assert drift["mlflow_run_url"] == model["mlflow_run_url"]
                with urllib.request.urlopen(drift["report_url"], timeout=10) as r:
                    served = r.read().decode("utf-8")
                assert r.headers.get_content_type() == "text/html"
                assert served == report
                lap("asset pages")
            finally:
                browser.close()
    finally:
        stop(web)
    print(f"lineage UI test timings (s since start): {timings}")
