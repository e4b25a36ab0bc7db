"""Real servers on loopback for tests: ``mlflow server`` and ``moto_server`` (S3)."""

from __future__ import annotations

import contextlib
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlops_assets_tests.processes import BIN, free_port, start, stop, wait_until


@dataclass(frozen=True)
class Server:
    url: str
    proc: object
    log: Path


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    # The job runner spawns extra processes and slows start from ~8 s to ~24 s; we use no jobs.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env.update(extra)
    return env


@contextlib.contextmanager
def mlflow_server(
    root: Path, artifacts_destination: str | None = None, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """``mlflow server`` with a SQLite store and proxied artifacts (clients need no storage)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = root / "mlflow-server.log"
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        artifacts_destination or (root / "artifacts").as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    proc = start(cmd, server_env(**(env or {})), log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until("mlflow server", lambda: _http_ok(f"{url}/health"), 120, proc, log)
        yield Server(url, proc, log)
    finally:
        stop(proc)


@contextlib.contextmanager
def moto_s3(root: Path) -> Iterator[Server]:
    """``moto_server``: an S3-compatible endpoint on loopback."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = root / "moto.log"
    proc = start([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], server_env(), log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until("moto_server", lambda: _http_ok(f"{url}/moto-api/"), 60, proc, log)
        yield Server(url, proc, log)
    finally:
        stop(proc)
