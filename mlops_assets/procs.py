"""Start and stop long-running child processes (servers, the daemon) without leaving any behind.

Servers may inherit ignored SIGINT/SIGTERM, so each child gets its own session and default
signal handlers, and is stopped by process group with a SIGKILL fallback. Used by the loop
benchmark and the end-to-end tests. Plain library code: no Dagster import.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def reset_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None):
    """``cmd`` in its own session, output to ``log``."""
    out = open(log, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=reset_signals,
    )


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds; children go too."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass
    # Children that outlived the leader (a code server, a run worker) go with the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_until(
    what: str,
    probe: Callable[[], object],
    timeout: float,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
    interval: float = 0.5,
):
    """Poll ``probe`` until it returns something truthy; raise with the log's tail if not."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = Path(log).read_text(errors="replace")[-3000:] if log else ""
            raise AssertionError(f"{what}: process exited with {proc.returncode}\n{tail}")
        try:
            last = probe()
            if last:
                return last
        except OSError as e:
            last = e
        time.sleep(interval)
    tail = Path(log).read_text(errors="replace")[-3000:] if log else ""
    raise AssertionError(f"{what}: not ready after {timeout}s (last: {last!r})\n{tail}")
