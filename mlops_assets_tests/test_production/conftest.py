"""A throwaway PostgreSQL cluster, and a DAGSTER_HOME with the production instance config on it.

The cluster is real: ``initdb`` into a temporary directory, then ``postgres`` listening on
127.0.0.1 on a free port (its unix socket in the same directory), password authentication.
It runs in its own process group (mlops_assets_tests.processes) and is stopped with
``pg_ctl stop -m fast`` (open client connections do not hold it up), the group killed if it
lingers (its backends call setsid, and exit by themselves once the postmaster is gone), and its
directory removed, also when a test fails. PostgreSQL refuses to run as root: as root, it runs
as the ``postgres`` user (or ``nobody``) through ``setpriv``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
import yaml

from mlops_assets.instance import install_instance_config
from mlops_assets_tests.processes import free_port, start, stop, wait_until
from mlops_assets_tests.test_production.fake_k8s_api import FakeK8sApi, fake_k8s_api

NAMESPACE = "mlops"  # the run launcher's job_namespace in the production config
DB_USER = "dagster"


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    socket_dir: Path

    def connect(self, db: str = "postgres"):
        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=db
        )

    def create_database(self) -> str:
        name = f"dagster_{uuid.uuid4().hex[:12]}"
        conn = self.connect()
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name

    def env(self, db: str) -> dict[str, str]:
        """What the production config reads (deploy/dagster/dagster.production.yaml)."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": db,
        }


def _pg_bindir() -> Path:
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for bindir in candidates:
        if (bindir / "postgres").exists() and (bindir / "pg_ctl").exists():
            return bindir
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, postgres, pg_ctl) not found: run "
        "scripts/test-deps.sh, or apt-get install postgresql"
    )


def _db_account() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as, when we are root (it refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and no 'postgres' or 'nobody' account to run PostgreSQL")


def _as(account: pwd.struct_passwd | None, cmd: list[str]) -> list[str]:
    if account is None:
        return cmd
    # setpriv execs in place (no PAM session, no extra parent), so the server is the group leader.
    return [
        "setpriv",
        f"--reuid={account.pw_uid}",
        f"--regid={account.pw_gid}",
        "--clear-groups",
        "--",
        *cmd,
    ]


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[Postgres]:
    bindir = _pg_bindir()
    account = _db_account()
    # Not under pytest's tmp dir: it is private to root, and the server's user must reach it.
    # Short, too: the unix socket path must stay under ~100 characters.
    base = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
    proc = None
    try:
        data = base / "data"
        password = secrets.token_urlsafe(16) + "@/:"  # characters the URL must quote
        pwfile = base / "pwfile"
        pwfile.write_text(password + "\n")
        if account is not None:
            for path in (base, pwfile):
                os.chown(path, account.pw_uid, account.pw_gid)
        env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "LANG": "C"}
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", DB_USER, f"--pwfile={pwfile}"]
        subprocess.run(
            _as(account, [*initdb, "--auth=scram-sha-256", "-E", "UTF8", "--no-locale", "-N"]),
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        port = free_port()
        log = base / "postgres.log"
        server = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(base)]
        # A test database: durability is not what is under test, speed is welcome.
        settings = ["listen_addresses=127.0.0.1", "fsync=off", "synchronous_commit=off"]
        settings += ["full_page_writes=off", "max_connections=200"]
        proc = start(_as(account, server + [a for s in settings for a in ("-c", s)]), env, log)
        pg = Postgres("127.0.0.1", port, DB_USER, password, base)

        def accepts() -> bool:
            try:
                pg.connect().close()
            except psycopg2.OperationalError:
                return False
            return True

        wait_until("postgres", accepts, 60, proc, log)
        yield pg
    finally:
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    pg_ctl = [str(bindir / "pg_ctl"), "stop", "-D", str(base / "data")]
                    subprocess.run(
                        _as(account, [*pg_ctl, "-m", "fast", "-w", "-t", "20"]),
                        env={"PATH": os.environ.get("PATH", "")},
                        capture_output=True,
                        timeout=30,
                    )
            stop(proc)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One real PostgreSQL cluster for the session; each test gets a database of its own."""
    with throwaway_postgres() as pg:
        yield pg


@pytest.fixture(scope="session")
def k8s_api(tmp_path_factory) -> Iterator[FakeK8sApi]:
    with fake_k8s_api(tmp_path_factory.mktemp("k8s"), NAMESPACE) as api:
        yield api


@dataclass(frozen=True)
class ProductionHome:
    path: Path
    env: dict[str, str]  # DAGSTER_HOME and the DAGSTER_PG_* the config reads
    db: str


@pytest.fixture
def production_home(tmp_path, monkeypatch, postgres, k8s_api) -> ProductionHome:
    """A DAGSTER_HOME holding the production config, as `install_instance_config` writes it,
    on a fresh database of the throwaway cluster. Only how the run launcher reaches the cluster
    changes (a kubeconfig for the recording API instead of in-cluster credentials); storage,
    queue, pools, monitoring and the launcher's settings are the file's own."""
    db = postgres.create_database()
    env = {**postgres.env(db), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    path = install_instance_config("production", env["DAGSTER_HOME"])
    config = yaml.safe_load(path.read_text())
    config["run_launcher"]["config"].update(
        load_incluster_config=False, kubeconfig_file=str(k8s_api.kubeconfig)
    )
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    k8s_api.clear()
    return ProductionHome(path.parent, env, db)
