"""Start and stop servers for end-to-end tests without leaving anything behind.

Servers may inherit ignored SIGINT/SIGTERM here, so each child gets its own session and
default signal handlers, and is stopped by process group with a SIGKILL fallback.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

from mlops_assets import procs
from mlops_assets.procs import free_port, stop, wait_until

__all__ = ["BIN", "REPO", "free_port", "graphql", "start", "stop", "wait_until"]

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
