"""No Docker engine runs here: check the Dockerfile's structure, and run its default command
and healthcheck for real."""

import json
import re
import shlex
import subprocess

import pytest

from mlops_assets_tests.processes import BIN, REPO, free_port, start, stop, wait_until

pytestmark = pytest.mark.e2e


def _instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return [tuple(ln.split(None, 1)) for ln in lines]


def test_dockerfile_structure():
    ins = _instructions()
    ops = [op for op, _ in ins]
    base = dict(ins)["FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), f"base image not pinned: {base}"
    copies = [arg for op, arg in ins if op == "COPY"]
    for arg in copies:
        for src in arg.split()[:-1]:
            assert (REPO / src).exists(), f"Dockerfile copies missing {src}"
    # Dependencies are installed before the source is copied (layer caching).
    first_src = next(i for i, (op, a) in enumerate(ins) if op == "COPY" and "mlops_assets" in a)
    lock_install = next(
        i for i, (op, a) in enumerate(ins) if op == "RUN" and "requirements.lock" in a
    )
    assert lock_install < first_src
    user = [a for op, a in ins if op == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert "HEALTHCHECK" in ops and "CMD" in ops


def test_default_command_serves_and_passes_its_healthcheck(tmp_path):
    ins = _instructions()
    cmd = json.loads(dict(ins)["CMD"])
    port = free_port()
    cmd = [str(BIN / cmd[0]), *cmd[1:]]
    cmd[cmd.index("-p") + 1] = str(port)
    cmd[cmd.index("-h") + 1] = "127.0.0.1"
    health = shlex.split(dict(ins)["HEALTHCHECK"].split("CMD", 1)[1].split("||")[0])
    health = [str(BIN / health[0]), *health[1:]]
    health[health.index("-p") + 1] = str(port)
    env = {"DAGSTER_HOME": str(tmp_path), "MLOPS_DATA_DIR": str(tmp_path / "data"), "PATH": ""}
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    log = tmp_path / "code-server.log"
    proc = start(cmd, env, log)
    try:

        def healthy():
            return subprocess.run(health, env=env, capture_output=True, timeout=30).returncode == 0

        assert wait_until("code server healthcheck", healthy, timeout=120, proc=proc, log=log)
    finally:
        stop(proc)
