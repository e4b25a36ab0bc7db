"""The rules that keep the house readable, checked on the source (see README, Layout):

- only ``mlops_assets/settings.py`` reads the environment;
- no ``defs/<group>`` imports another group (they share keys, resources, policies, metadata);
- no library package imports ``defs/``, the CLI, the demo or Dagster; the product never
  imports the tests or the benchmarks;
- private ``dagster._…`` imports live in at most one small adapter module.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mlops_assets"
GROUPS = ("data", "features", "training", "deployment", "monitoring", "inference")
# The Dagster glue, the command line and the demo may use the library; not the other way round.
GLUE = ("defs", "definitions.py", "cli.py", "demo")
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports (``from a.b import c`` counts as ``a.b`` and ``a.b.c``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def _reads_environment(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in ("environ", "getenv", "putenv", "unsetenv", "environb")
        ):
            lines.append(node.lineno)
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and {a.name for a in node.names} & {"environ", "getenv", "environb"}
        ):
            lines.append(node.lineno)
    return lines


def test_the_rules_see_the_whole_package():
    assert len(MODULES) > 40 and (PACKAGE / "settings.py") in MODULES


def test_only_the_settings_module_reads_the_environment():
    found = {
        _rel(p): lines
        for p in MODULES
        if _rel(p) != "settings.py"
        if (lines := _reads_environment(p))
    }
    assert not found, f"read the environment outside mlops_assets/settings.py (lines): {found}"


@pytest.mark.parametrize("group", GROUPS)
def test_no_domain_folder_imports_another(group):
    folder = PACKAGE / "defs" / group
    assert folder.is_dir()
    others = tuple(f"mlops_assets.defs.{g}" for g in GROUPS if g != group)
    found = [
        f"{_rel(p)}:{line} imports {name}"
        for p in folder.rglob("*.py")
        for line, name in _imports(p)
        if name.startswith(others)
    ]
    assert not found, found


def test_the_library_imports_no_glue_no_demo_and_no_dagster():
    forbidden = (
        "mlops_assets.defs",
        "mlops_assets.definitions",
        "mlops_assets.cli",
        "mlops_assets.demo",
        "dagster",
        "dagster_mlflow",
        "dagster_k8s",
    )
    library = [p for p in MODULES if not _rel(p).startswith(GLUE)]
    assert PACKAGE / "serving" / "app.py" in library and PACKAGE / "store" / "local.py" in library
    found = [
        f"{_rel(p)}:{line} imports {name}"
        for p in library
        for line, name in _imports(p)
        if name == "dagster" or name.startswith(tuple(f"{f}." for f in forbidden) + forbidden)
    ]
    assert not found, found


def test_the_product_never_imports_tests_or_benchmarks():
    found = [
        f"{_rel(p)}:{line} imports {name}"
        for p in MODULES
        for line, name in _imports(p)
        if name.split(".")[0] in ("mlops_assets_tests", "benchmarks")
    ]
    assert not found, found


def test_private_dagster_imports_live_in_at_most_one_adapter():
    users = sorted(
        {_rel(p) for p in MODULES for _, name in _imports(p) if name.startswith("dagster._")}
    )
    assert len(users) <= 1, f"private Dagster APIs used in {users}: keep them in one adapter"


def test_asset_check_and_sensor_bodies_stay_thin():
    """Glue maps library results to outputs, metadata and checks: 60 lines at most."""
    bodies = {}
    for p in (PACKAGE / "defs").rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.FunctionDef) and node.decorator_list:
                bodies[f"{_rel(p)}:{node.name}"] = node.end_lineno - node.body[0].lineno + 1
    assert "defs/monitoring/assets.py:drift_report" in bodies
    thick = {name: n for name, n in bodies.items() if n > 60}
    assert not thick, (
        f"asset/check/sensor bodies over 60 lines (move the logic to the library): {thick}"
    )
