"""Start and stop servers for end-to-end tests without leaving anything behind.

Servers may inherit ignored SIGINT/SIGTERM here, so each child gets its own session and
default signal handlers, and is stopped by process group with a SIGKILL fallback.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

from mlops_assets import procs
from mlops_assets.procs import free_port, stop, wait_until

__all__ = ["BIN", "REPO", "free_port", "fresh_home", "graphql", "start", "stop", "wait_until"]

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``cmd`` in its own session from the repository, output to ``log``."""
    return procs.start(cmd, env, log, cwd=REPO)


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def fresh_home(tmp_path: Path, **env: str) -> dict[str, str]:
    """A brand-new DAGSTER_HOME (the repository's dagster.yaml) and the environment to use it:
    this process's, without any MLOPS_/LAKEFS_/MLFLOW_ switch, plus ``env``."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    ours = ("MLOPS_", "LAKEFS_", "MLFLOW_")
    out = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    out.update(DAGSTER_HOME=str(home), **env)
    return out
