"""The asset graph as a reviewed file: every asset (group, kinds, deps, owners, automation,
code version, freshness, pool), asset check, sensor and job of the code location, compared with
``graph_snapshot.json``. A structural change shows up as a diff of that file in review."""

import datetime as dt
import difflib
import json
import os
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.definitions import defs
from mlops_assets_tests.processes import REPO

SNAPSHOT = Path(__file__).with_name("graph_snapshot.json")
UPDATE = "MLOPS_UPDATE_SNAPSHOT"
REGENERATE = f"{UPDATE}=1 .venv/bin/python -m pytest mlops_assets_tests/test_graph_snapshot.py"


def condition_text(condition: dg.AutomationCondition) -> str:
    """As the UI and `dg list defs` show it: the label, then its operands down to the first
    labelled ones (``(eager) AND (all_deps_blocking_checks_passed)``). Dagster's own expansion
    of ``eager()`` is left out: it is Dagster's, not ours, and changes with its releases."""

    def operands(c: dg.AutomationCondition, top: bool) -> str:
        if c.get_label() and not top:
            return c.get_label()
        node = c.name or c.description
        kids = [f"({operands(child, top=False)})" for child in c.children]
        if len(kids) <= 1:
            return " ".join([node, *kids])
        return f" {node} ".join(kids)

    label = condition.get_label()
    expanded = operands(condition, top=True)
    return f"{label}: {expanded}" if label else expanded


def seconds(delta) -> float:
    """A freshness window in seconds (Dagster stores them as serializable time deltas)."""
    return dt.timedelta(days=delta.days, seconds=delta.seconds).total_seconds()


def freshness(policy) -> dict | None:
    if policy is None:
        return None
    return {
        "policy": type(policy).__name__,
        "fail_window_seconds": seconds(policy.fail_window),
        "warn_window_seconds": seconds(policy.warn_window) if policy.warn_window else None,
    }


def graph_of(definitions: dg.Definitions) -> dict:
    """Everything structural about the code location, sorted, with nothing machine-specific."""
    graph = definitions.resolve_asset_graph()
    name = dg.AssetKey.to_user_string
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=name):
        node = graph.get(key)
        assets[name(key)] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "deps": sorted(name(parent) for parent in node.parent_keys),
            "owners": sorted(node.owners),
            "automation_condition": (
                condition_text(node.automation_condition) if node.automation_condition else None
            ),
            "code_version": node.code_version,
            "observable": node.is_observable,
            "materializable": node.is_materializable,
            "freshness_policy": freshness(node.freshness_policy),
            "pools": sorted(node.pools),
            "tags": {
                k: v for k, v in sorted(node.tags.items()) if not k.startswith("dagster/kind/")
            },
        }
    checks = {  # keyed as `dg list defs` shows them: <asset key>:<check name>
        f"{name(k.asset_key)}:{k.name}": {"blocking": graph.get(k).blocking}
        for k in graph.asset_check_keys
    }
    sensors = {}
    for sensor in sorted(definitions.sensors, key=lambda s: s.name):
        selection = sensor.asset_selection
        sensors[sensor.name] = {
            "type": type(sensor).__name__,
            "default_status": sensor.default_status.value,
            "minimum_interval_seconds": sensor.minimum_interval_seconds,
            "target_assets": (
                sorted(name(k) for k in selection.resolve(graph)) if selection else None
            ),
            "target_jobs": sorted(t.job_name for t in sensor.targets) if sensor.has_jobs else None,
        }
    repository = definitions.get_repository_def()
    jobs = sorted(j.name for j in repository.get_all_jobs() if not j.name.startswith("__"))
    return {"assets": assets, "asset_checks": checks, "sensors": sensors, "jobs": jobs}


def current_graph(monkeypatch, tmp_path) -> dict:
    """The graph of the embedded default: none of our environment switches set."""
    for var in list(os.environ):
        if var.startswith(("MLOPS_", "MLFLOW_", "LAKEFS_")):
            monkeypatch.delenv(var)
    tmp_path.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    return graph_of(defs())


def render(graph: dict) -> str:
    return json.dumps(graph, indent=2, sort_keys=True) + "\n"


def test_the_asset_graph_matches_its_snapshot(monkeypatch, tmp_path):
    update = os.environ.get(UPDATE) == "1"  # read before our variables are cleared
    current = render(current_graph(monkeypatch, tmp_path))
    assert str(tmp_path) not in current and str(REPO) not in current  # nothing of this machine
    if update:
        SNAPSHOT.write_text(current)
    recorded = SNAPSHOT.read_text() if SNAPSHOT.exists() else ""
    if current != recorded:
        diff = "".join(
            difflib.unified_diff(
                recorded.splitlines(keepends=True),
                current.splitlines(keepends=True),
                fromfile=f"{SNAPSHOT.name} (recorded)",
                tofile="the code location now",
            )
        )
        pytest.fail(
            f"The asset graph differs from {SNAPSHOT.name}:\n{diff}\n"
            f"If the change is intended, regenerate the snapshot and commit it with the change:\n"
            f"  {REGENERATE}",
            pytrace=False,
        )


def test_the_snapshot_is_the_same_on_every_build(monkeypatch, tmp_path):
    """Nothing in it depends on the run: two builds (other DAGSTER_HOME) render the same."""
    first = render(current_graph(monkeypatch, tmp_path / "a"))
    assert render(current_graph(monkeypatch, tmp_path / "b")) == first
