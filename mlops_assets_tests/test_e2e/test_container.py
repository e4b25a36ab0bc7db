"""No Docker engine runs here: check the Dockerfile's structure, and run what the image runs for
real — its entrypoint script, its default command and healthcheck, and every role's command and
healthcheck as docker-compose.yml gives them."""

import fnmatch
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from mlops_assets_tests.processes import BIN, REPO, free_port, start, stop, wait_until

pytestmark = pytest.mark.e2e

DOCKERFILE = REPO / "Dockerfile"


def dockerfile_instructions() -> list[tuple[str, str, str]]:
    """(instruction, arguments, heredoc body) for each instruction, continuations joined."""
    lines = DOCKERFILE.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        while line.endswith("\\"):
            nxt = lines[i].strip()
            i += 1
            if not nxt.startswith("#"):
                line = f"{line[:-1].rstrip()} {nxt}"
        op, _, args = line.partition(" ")
        body = ""
        heredoc = re.search(r"<<-?(['\"]?)(\w+)\1", args)
        if heredoc:
            end = lines.index(heredoc.group(2), i)
            body = "\n".join(lines[i:end]) + "\n"
            i = end + 1
        out.append((op.upper(), args.strip(), body))
    return out


def instruction(op: str) -> str:
    """The arguments of the last ``op`` instruction (the one that counts)."""
    return [args for o, args, _ in dockerfile_instructions() if o == op][-1]


def dockerfile_env() -> dict[str, str]:
    env = {}
    for op, args, _ in dockerfile_instructions():
        if op == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
    return env


def default_command() -> list[str]:
    return json.loads(instruction("CMD"))


def documented_roles() -> dict[str, list[str]]:
    """The role commands listed in the Dockerfile's header: ``#   role : command``."""
    roles = {}
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("#"):
            break
        m = re.match(r"#\s+([\w ]+?)\s+:\s+(?:\(default CMD\)\s+)?(\S.*)$", line)
        if m:
            roles[m.group(1)] = shlex.split(m.group(2))
    return roles


def entrypoint_script() -> tuple[str, str]:
    """(path in the image, script text) of the entrypoint written by a heredoc COPY."""
    entry = json.loads(instruction("ENTRYPOINT"))
    script = next(e for e in entry if e.startswith("mlops-"))
    for op, args, body in dockerfile_instructions():
        if op == "COPY" and body and args.split()[-1].endswith("/" + script):
            return args.split()[-1], body
    raise AssertionError(f"the ENTRYPOINT runs {script}, which no COPY <<EOF writes")


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (relative to the context) out of the build."""
    patterns = [
        p.strip()
        for p in (REPO / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.strip().startswith("#")
    ]
    parts = Path(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        forms = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatchcase(c, f) for c in candidates for f in forms):
            ignored = not negate
    return ignored


def test_dockerfile_structure():
    ins = dockerfile_instructions()
    ops = [op for op, _, _ in ins]
    text = DOCKERFILE.read_text()
    assert re.match(r"# syntax=docker/dockerfile:\d+(\.\d+)*\n", text), "frontend not pinned"
    base = instruction("FROM")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), f"base image not pinned: {base}"
    copies = [args for op, args, body in ins if op == "COPY" and not body]
    assert copies
    for args in copies:
        for src in [a for a in args.split() if not a.startswith("--")][:-1]:
            assert (REPO / src).exists(), f"Dockerfile copies missing {src}"
            assert not dockerignored(src), f"Dockerfile copies {src}, which .dockerignore excludes"
    # Dependencies are installed before the source is copied (layer caching).
    first_src = next(i for i, (op, a, _) in enumerate(ins) if op == "COPY" and "mlops_assets" in a)
    lock_install = next(
        i for i, (op, a, _) in enumerate(ins) if op == "RUN" and "requirements.lock" in a
    )
    lock_copy = next(i for i, (op, a, _) in enumerate(ins) if op == "COPY" and "requirements" in a)
    assert lock_copy < lock_install < first_src
    # Numeric and not root, so that Kubernetes can enforce runAsNonRoot.
    user = instruction("USER")
    assert re.fullmatch(r"\d+(:\d+)?", user) and user.split(":")[0] != "0", user
    assert ops.index("USER") > max(i for i, op in enumerate(ops) if op == "RUN")
    assert "HEALTHCHECK" in ops and "CMD" in ops
    assert "kubectl" not in text, "the image has no business talking to the cluster"


def test_signals_labels_and_instance_configs():
    # tini is PID 1 and forwards signals to the whole process group.
    entry = json.loads(instruction("ENTRYPOINT"))
    assert entry[:3] == ["tini", "-g", "--"], entry
    assert any(
        op == "RUN" and re.search(r"apt-get install .*\btini=\S+", a)
        for op, a, _ in dockerfile_instructions()
    ), "tini is installed at a pinned version"
    # The revision label comes from a build argument, after the expensive layers.
    ins = dockerfile_instructions()
    label = instruction("LABEL")
    assert "org.opencontainers.image.revision=${VCS_REF}" in label.replace('"', "")
    arg = next(i for i, (op, a, _) in enumerate(ins) if op == "ARG" and a.startswith("VCS_REF"))
    assert arg > max(i for i, (op, _, _) in enumerate(ins) if op in ("RUN", "COPY"))
    # Every instance config MLOPS_ENV can select is copied into the image.
    from mlops_assets.instance import CONFIG_FILES

    copied = [
        src
        for op, args, body in dockerfile_instructions()
        if op == "COPY" and not body
        for src in [a for a in args.split() if not a.startswith("--")][:-1]
    ]
    for env, path in CONFIG_FILES.items():
        rel = path.relative_to(REPO)
        assert any(rel == Path(src) or Path(src) in rel.parents for src in copied), (
            f"MLOPS_ENV={env} selects {rel}, which the Dockerfile does not copy"
        )
    assert dockerfile_env()["DAGSTER_HOME"] and dockerfile_env()["MLOPS_DATA_DIR"]


def test_dockerignore_keeps_local_state_out():
    for path in (".git", ".venv", ".dagster_home", ".mlops-data", ".env", "mlops_assets_tests"):
        assert dockerignored(path), f"{path} would be sent to the build"
    assert dockerignored("mlops_assets/serving/__pycache__/app.cpython-311.pyc")
    assert not dockerignored("mlops_assets/serving/app.py")


def test_documented_roles_are_installed_commands():
    roles = documented_roles()
    assert {"user code", "webserver", "daemon", "serving"} <= set(roles), roles
    assert roles["user code"] == default_command()
    for role, cmd in roles.items():
        assert (BIN / cmd[0]).exists(), f"role {role!r} runs {cmd[0]}, which is not installed"


def _run_entrypoint(tmp_path: Path, env: dict[str, str], *cmd: str) -> subprocess.CompletedProcess:
    _, body = entrypoint_script()
    script = tmp_path / "mlops-entrypoint"
    script.write_text(body)
    base = {"PATH": f"{BIN}:/usr/bin:/bin", "DAGSTER_HOME": str(tmp_path / "home")}
    return subprocess.run(
        ["sh", str(script), *cmd],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_entrypoint_selects_the_instance_config_for_mlops_env(tmp_path):
    from mlops_assets.instance import CONFIG_FILES, PRODUCTION

    target = tmp_path / "home" / "dagster.yaml"
    for env_name, expected in CONFIG_FILES.items():
        done = _run_entrypoint(tmp_path, {"MLOPS_ENV": env_name}, "echo", "role ran")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "role ran\n"
        assert target.is_symlink() and target.resolve() == expected.resolve(), done.stderr
    # Unset means embedded.
    done = _run_entrypoint(tmp_path, {}, "true")
    assert done.returncode == 0 and target.resolve() == CONFIG_FILES["embedded"].resolve()
    # Production without its Postgres settings still starts, but says what is missing.
    done = _run_entrypoint(tmp_path, {"MLOPS_ENV": PRODUCTION}, "true")
    assert done.returncode == 0 and "DAGSTER_PG_PASSWORD" in done.stderr
    # An unknown name is refused before the role starts, with the reason.
    done = _run_entrypoint(tmp_path, {"MLOPS_ENV": "staging"}, "echo", "role ran")
    assert done.returncode != 0 and "role ran" not in done.stdout
    assert "'staging' is not supported" in done.stderr
    # A config provided at the target (a mount, a ConfigMap) is left alone.
    target.unlink()
    target.write_text("telemetry: {enabled: false}\n")
    done = _run_entrypoint(tmp_path, {"MLOPS_ENV": PRODUCTION}, "true")
    assert done.returncode == 0 and "provided" in done.stderr
    assert not target.is_symlink() and target.read_text() == "telemetry: {enabled: false}\n"


# --- every role for real, with the commands and healthchecks of docker-compose.yml ----------


def _compose_service(name: str) -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"][name]


def _local(cmd: list[str], port: int, **flags: str) -> list[str]:
    """``cmd`` with its binary from .venv/bin, bound to loopback on ``port``."""
    cmd = [str(BIN / cmd[0]), *cmd[1:]]
    for flag, value in {**flags}.items():
        cmd[cmd.index(flag) + 1] = value
    for host_flag in ("-h", "--host"):
        if host_flag in cmd:
            cmd[cmd.index(host_flag) + 1] = "127.0.0.1"
    for port_flag in ("-p", "--port"):
        if port_flag in cmd:
            cmd[cmd.index(port_flag) + 1] = str(port)
    return cmd


def _healthcheck(test: list[str] | str, port: int | None) -> list[str]:
    if isinstance(test, str):  # the Dockerfile's shell form
        cmd = shlex.split(test.split("||")[0])
    else:
        assert test[0] == "CMD", test
        cmd = list(test[1:])
    cmd = [str(BIN / cmd[0]), *cmd[1:]]
    if port is not None:
        cmd = [re.sub(r"(localhost:)\d+", rf"\g<1>{port}", c) for c in cmd]
        if "-p" in cmd:
            cmd[cmd.index("-p") + 1] = str(port)
    return cmd


def _passes(cmd: list[str], env: dict[str, str]) -> bool:
    return subprocess.run(cmd, env=env, capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def roles(tmp_path_factory):
    """The code server (default command, through the entrypoint), the webserver and the daemon
    loading it over gRPC as compose's workspace says, and the inference server; embedded
    storage, since compose's Postgres and lakeFS are not here."""
    tmp = tmp_path_factory.mktemp("roles")
    _, body = entrypoint_script()
    entry = tmp / "mlops-entrypoint"
    entry.write_text(body)
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(tmp),
        "DAGSTER_HOME": str(tmp / "home"),
        "MLOPS_DATA_DIR": str(tmp / "data"),
        "MLOPS_SERVING_TOKEN": "test-token",
    }
    ports = {name: free_port() for name in ("code", "web", "serve")}
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    workspace = yaml.safe_load(compose["configs"]["dagster-workspace"]["content"])
    grpc = workspace["load_from"][0]["grpc_server"]
    grpc.update(host="127.0.0.1", port=ports["code"])
    (tmp / "workspace.yaml").write_text(yaml.safe_dump(workspace))
    container_workspace = next(
        c["target"]
        for c in _compose_service("webserver")["configs"]
        if c["source"] == "dagster-workspace"
    )
    commands = {
        "code": _local(default_command(), ports["code"]),
        "web": _local(
            _compose_service("webserver")["command"],
            ports["web"],
            **{"-w": str(tmp / "workspace.yaml")},
        ),
        "daemon": _local(
            _compose_service("daemon")["command"], 0, **{"-w": str(tmp / "workspace.yaml")}
        ),
        "serve": _local(_compose_service("inference")["command"], ports["serve"]),
    }
    assert container_workspace in _compose_service("daemon")["command"]
    # The embedded instance's SQLite storage is created once, before the webserver and the
    # daemon open it at the same moment (two first openings raced in alembic and the daemon
    # never beat; compose's Postgres is created once by its own service)
    subprocess.run(
        ["sh", str(entry), "dagster", "instance", "migrate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    procs = {}
    try:
        # The code server first: the others load the code location from it.
        procs["code"] = start(["sh", str(entry), *commands["code"]], env, tmp / "code.log")
        for name in ("serve", "web", "daemon"):
            procs[name] = start(["sh", str(entry), *commands[name]], env, tmp / f"{name}.log")
        yield {"tmp": tmp, "env": env, "ports": ports, "procs": procs}
    finally:
        for proc in procs.values():
            stop(proc)


def test_default_command_serves_and_passes_its_healthcheck(roles):
    health = _healthcheck(instruction("HEALTHCHECK").split("CMD", 1)[1], roles["ports"]["code"])
    assert wait_until(
        "code server healthcheck",
        lambda: _passes(health, roles["env"]),
        timeout=180,
        proc=roles["procs"]["code"],
        log=roles["tmp"] / "code.log",
    )
    # It went through the entrypoint, which installed the embedded instance config.
    assert (roles["tmp"] / "home" / "dagster.yaml").resolve() == (REPO / "dagster.yaml").resolve()


@pytest.mark.parametrize(
    ("service", "role", "port"),
    [("webserver", "web", "web"), ("daemon", "daemon", None), ("inference", "serve", "serve")],
)
def test_compose_role_passes_its_compose_healthcheck(roles, service, role, port):
    test = _compose_service(service)["healthcheck"]["test"]
    health = _healthcheck(test, roles["ports"][port] if port else None)
    assert wait_until(
        f"{service} healthcheck {shlex.join(test)}",
        lambda: _passes(health, roles["env"]),
        timeout=180,
        proc=roles["procs"][role],
        log=roles["tmp"] / f"{role}.log",
    )
