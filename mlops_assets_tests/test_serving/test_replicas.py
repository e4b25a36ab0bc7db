"""One rollout for every replica, behind a real load balancer.

Three real ``mlops serve`` replicas (each reconciling to the registry every 0.5 s) sit behind a
real nginx on loopback, which retries another replica on a connection error, and clients send
single-row predictions through nginx the whole time. A real Prometheus scrapes the replicas.

Shown: a canary promoted and one rolled back, each decided on the figures of all three
replicas, with zero failed client requests and every replica on the same state (read from
each replica directly); a replica killed with SIGKILL in the middle of a canary (the rollout
refuses to decide on a partial view and rolls back); the Dagster run of ``deployment`` killed in
the middle of a canary (its lease expires and every replica falls back by itself); a blue-green
switch through the balancer; and the production analysis path (PromQL over the replicas'
metrics in a real Prometheus). Every wait polls with a generous deadline; nothing is timed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import httpx
import pytest

from mlops_assets.defs.keys import deployment_key, model_evaluation_key
from mlops_assets.serving.analysis import AnalysisError, PrometheusStats, ReplicaStats
from mlops_assets.serving.client import Replay, ServingClient
from mlops_assets.serving.reconcile import ROLLOUT_TAG, Rollout
from mlops_assets.serving.rollout import Policy, RegistryControl, rollout
from mlops_assets.specs.model import get_spec
from mlops_assets.training.tracking import PRODUCTION, Tracking
from mlops_assets_tests.processes import BIN, REPO, free_port, fresh_home, start, stop, wait_until
from mlops_assets_tests.servers import server_env
from mlops_assets_tests.test_serving.conftest import TOKEN, _ready, serve_env

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
pytestmark = [
    pytest.mark.skipif(
        not (Path(NGINX).exists() and Path(PROMETHEUS).exists()),
        reason="needs nginx and prometheus (Debian packages): run scripts/test-deps.sh",
    ),
    # the first test also pays for the session's registry (five versions trained) and three
    # replicas loading their models: minutes on a loaded 2-core machine
    pytest.mark.timeout(900),
]
CLIENT_THREADS = 4


# ---- the cluster ------------------------------------------------------------------------


@dataclass
class Replica:
    port: int
    data_dir: Path
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    registry: object
    replicas: list[Replica]
    lb: str  # the balancer's URL: what clients use
    prometheus: str
    tracking: Tracking
    model_name: str
    env: dict = field(default_factory=dict)

    def version(self, role: str) -> str:
        return self.registry.versions[("churn", role)]

    def start(self, r: Replica) -> None:
        cmd = [str(BIN / "mlops"), "serve", "--port", str(r.port), "--poll-seconds", "0.5"]
        r.proc = start(cmd, {**self.env, "MLOPS_DATA_DIR": str(r.data_dir)}, r.log)

    def wait_ready(self, r: Replica) -> None:
        wait_until(f"replica {r.url}", lambda: _ready(r.url), 180, r.proc, r.log)

    def states(self, replicas: list[Replica] | None = None) -> list[dict]:
        """Each replica's deployment of churn, asked directly (not through the balancer)."""
        return [ServingClient(r.url, TOKEN).deployment("churn") for r in replicas or self.replicas]

    def wait_all(self, expected: dict, what: str, replicas: list[Replica] | None = None) -> None:
        wait_until(what, lambda: all(s == expected for s in self.states(replicas)), 120)

    def control(self) -> RegistryControl:
        return RegistryControl(self.tracking, self.model_name)

    def every_replica(self) -> ReplicaStats:
        return ReplicaStats([r.url for r in self.replicas], TOKEN)


def alone(version: str) -> dict:
    return {"production": version, "candidate": None, "weight": 0.0, "mode": "single"}


NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  upstream replicas {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      # A replica that refuses the connection (killed, restarting): try the next one. A
      # request already sent to a replica that dies is not replayed (POST is not idempotent).
      proxy_next_upstream error timeout;
      proxy_next_upstream_tries 3;
      proxy_connect_timeout 2s;
      proxy_read_timeout 120s;
    }}
  }}
}}
"""

PROMETHEUS_CONF = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: mlops-inference
    static_configs:
      - targets: [{targets}]
  # a target that never answers: a replica that is down, for the analysis to refuse
  - job_name: mlops-down
    static_configs:
      - targets: ["127.0.0.1:{dead}"]
"""


def _ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


@pytest.fixture(scope="module")
def cluster(registry, tmp_path_factory):
    root = tmp_path_factory.mktemp("replicas")
    tracking = Tracking(registry.tracking_uri)
    tracking.configure()
    model_name = get_spec("churn", registry.specs_dir).model_name
    tracking.delete_model_tag(model_name, ROLLOUT_TAG)
    tracking.set_alias(model_name, PRODUCTION, registry.versions[("churn", "champion")])
    replicas = [
        Replica(free_port(), root / f"replica-{i}", root / f"replica-{i}.log") for i in range(3)
    ]
    c = Cluster(registry, replicas, "", "", tracking, model_name, serve_env(registry))
    procs = []
    try:
        for r in replicas:
            c.start(r)
        for r in replicas:
            c.wait_ready(r)

        lb_port, lb_dir = free_port(), root / "nginx"
        lb_dir.mkdir()
        servers = "\n".join(f"    server 127.0.0.1:{r.port};" for r in replicas)
        conf = lb_dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=lb_dir, servers=servers, port=lb_port))
        nginx = start(
            [NGINX, "-p", str(lb_dir), "-c", str(conf), "-e", str(lb_dir / "error.log"),
             "-g", "daemon off;"],
            server_env(), lb_dir / "stdout.log",
        )  # fmt: skip
        procs.append(nginx)
        c.lb = f"http://127.0.0.1:{lb_port}"
        wait_until("nginx", lambda: _ok(f"{c.lb}/v2/health/ready"), 60, nginx, lb_dir / "error.log")

        prom_port, prom_dir = free_port(), root / "prometheus"
        prom_dir.mkdir()
        targets = ", ".join(f'"127.0.0.1:{r.port}"' for r in replicas)
        (prom_dir / "prometheus.yml").write_text(
            PROMETHEUS_CONF.format(targets=targets, dead=free_port())
        )
        prom = start(
            [PROMETHEUS, f"--config.file={prom_dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={prom_dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            server_env(), prom_dir / "prometheus.log",
        )  # fmt: skip
        procs.append(prom)
        c.prometheus = f"http://127.0.0.1:{prom_port}"
        wait_until(
            "prometheus", lambda: _ok(f"{c.prometheus}/-/ready"), 60, prom,
            prom_dir / "prometheus.log",
        )  # fmt: skip
        yield c
    finally:
        for p in procs:
            stop(p)
        for r in replicas:
            if r.proc is not None:
                stop(r.proc)


@pytest.fixture
def champion_alone(cluster):
    """Every test starts and ends with the champion alone on every replica."""

    def reset():
        cluster.tracking.delete_model_tag(cluster.model_name, ROLLOUT_TAG)
        cluster.tracking.set_alias(cluster.model_name, PRODUCTION, cluster.version("champion"))
        for r in cluster.replicas:
            if r.proc is None or r.proc.poll() is not None:
                cluster.start(r)
                cluster.wait_ready(r)
        cluster.wait_all(alone(cluster.version("champion")), "every replica on the champion")

    reset()
    yield cluster
    reset()


class Clients:
    """Threads sending single-row predictions through the balancer; every answer is counted."""

    def __init__(self, url: str, rows: list[dict], threads: int = CLIENT_THREADS):
        self.url, self.rows = url, rows
        self.codes: Counter = Counter()
        self.versions: Counter = Counter()
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, offset: int) -> None:
        i = offset
        with httpx.Client(base_url=self.url, timeout=120) as http:
            while not self._stop.is_set():
                row = self.rows[i % len(self.rows)]
                i += len(self._threads)
                try:
                    r = http.post("/predict", json={"model": "churn", "records": [row]})
                except httpx.HTTPError as e:
                    with self._lock:
                        self.codes["no answer"] += 1
                        self.failures.append(repr(e))
                    continue
                with self._lock:
                    self.codes[r.status_code] += 1
                    if r.status_code == 200:
                        self.versions[r.json()["model_version"]] += 1
                    else:
                        self.failures.append(f"{r.status_code} {r.text[:300]}")

    @property
    def sent(self) -> int:
        return sum(self.codes.values())

    def __enter__(self) -> Clients:
        for t in self._threads:
            t.start()
        wait_until("client traffic", lambda: self.sent >= 20, 60)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=180)


def policy(**kw) -> Policy:
    # Bounds a loaded 2-core machine meets for a healthy version; the bad ones miss them by far.
    # (The mean prediction of two forests over a few dozen random rows each differs by chance
    # by up to ~50 %: the shift bound is not what these tests judge.)
    base = {
        "window_requests": 90,
        "timeout_seconds": 120,
        "lease_seconds": 10,
        "max_p95_ms": 5e3,
        "max_prediction_shift": 3.0,
    }
    return Policy(**{**base, **kw})


def roll(cluster, role, analysis=None, traffic=None, log=lambda m: None, **kw):
    return rollout(
        cluster.control(),
        analysis or cluster.every_replica(),
        "churn",
        cluster.version(role),
        policy(**kw),
        traffic=traffic,
        log=log,
    )


# ---- the scenarios ----------------------------------------------------------------------


def test_a_canary_is_promoted_on_every_replica_with_no_failed_request(champion_alone):
    c = champion_alone
    with Clients(c.lb, c.registry.holdout["churn"]) as clients:
        result = roll(c, "challenger", canary_weight=0.3)
    assert result.decision == "promoted", result.reason
    assert result.candidate_stats["replicas"] == 3  # the canary answered on every replica
    assert result.candidate_stats["requests"] >= 90 and result.candidate_stats["errors"] == 0
    assert clients.failures == [] and clients.sent > 0
    assert set(clients.versions) == {c.version("champion"), c.version("challenger")}
    assert c.states() == [alone(c.version("challenger"))] * 3
    assert c.control().desired().rollout is None


def test_a_slow_canary_is_rolled_back_on_every_replica_with_no_failed_request(champion_alone):
    # 2,500 unpruned trees: ~75 ms a row against the champion's ~7 ms; the bound sits between
    c = champion_alone
    with Clients(c.lb, c.registry.holdout["churn"]) as clients:
        result = roll(c, "slow", canary_weight=0.3, window_requests=60, max_p95_ms=40)
    assert result.decision == "rolled_back"
    assert "p95 latency" in result.reason, result.reason
    assert result.candidate_stats["replicas"] == 3
    assert clients.failures == []
    assert c.states() == [alone(c.version("champion"))] * 3
    assert c.control().desired().production == c.version("champion")  # the alias never moved


def test_a_replica_killed_mid_canary_stops_the_promotion(champion_alone):
    c = champion_alone
    victim = c.replicas[2]
    done: dict = {}
    canary = {
        "production": c.version("champion"),
        "candidate": c.version("challenger"),
        "weight": 0.3,
        "mode": "canary",
    }

    watching = threading.Event()

    def seen(message: str) -> None:  # the rollout saw the canary on every replica
        if "on every replica" in message:
            watching.set()

    def run():  # a window it cannot fill before the kill: still watching when it happens
        done["result"] = roll(
            c, "challenger", log=seen, canary_weight=0.3, window_requests=10**9,
            timeout_seconds=60, decision_rule="fixed",
        )  # fmt: skip

    with Clients(c.lb, c.registry.holdout["churn"]) as clients:
        watcher = threading.Thread(target=run)
        watcher.start()
        wait_until("the rollout watching", watching.is_set, 120)
        c.wait_all(canary, "the canary on every replica")
        os.killpg(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(30)
        watcher.join(timeout=300)
    result = done["result"]
    assert result.decision == "rolled_back"
    assert f"replica {victim.url} could not be read" in result.reason, result.reason
    # only the requests in flight on the killed replica may fail; nginx retries the rest
    assert len(clients.failures) <= CLIENT_THREADS, clients.failures
    assert all(f.startswith("502") for f in clients.failures), clients.failures
    survivors = c.replicas[:2]
    c.wait_all(alone(c.version("champion")), "the survivors on the champion", survivors)
    assert c.control().desired().rollout is None
    # the killed replica comes back on the shared state, like the others
    c.start(victim)
    c.wait_ready(victim)
    c.wait_all(alone(c.version("champion")), "every replica on the champion")


def test_the_dagster_run_killed_mid_canary_its_lease_expires_everywhere(champion_alone, tmp_path):
    """A real Dagster run of ``churn/deployment`` (the CLI, on its own instance) is killed with
    SIGKILL while it watches its canary: nobody cleans up, the lease it stopped renewing runs
    out, and every replica falls back to the champion by itself."""
    c = champion_alone
    spec = get_spec("churn", c.registry.specs_dir)
    data_dir = tmp_path / "data"  # the run's own copy of the data the registry was trained on
    shutil.copytree(
        c.registry.data_dir / "lakefs-local" / spec.dataset.repository,
        data_dir / "lakefs-local" / spec.dataset.repository,
    )
    env = fresh_home(
        tmp_path,
        MLFLOW_TRACKING_URI=c.registry.tracking_uri,
        MLOPS_SPECS_DIR=c.registry.specs_dir,
        MLOPS_DATA_DIR=str(data_dir),
        MLOPS_SERVING_URL=c.lb,
        MLOPS_SERVING_TOKEN=TOKEN,
        MLOPS_SERVING_REPLICAS=",".join(r.url for r in c.replicas),
        MLOPS_ROLLOUT_LEASE_SECONDS="4",
        MLOPS_REPLAY_HOLDOUT="false",  # the clients are the traffic
    )
    dagster = [str(BIN / "dagster"), "asset", "materialize", "-m", "mlops_assets.definitions"]
    features = subprocess.run(
        [*dagster, "--select", "churn/dataset,churn/features"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert features.returncode == 0, features.stderr[-3000:]
    # the gate's verdict on the challenger, as model_evaluation records it
    candidate, champion = c.version("challenger"), c.version("champion")
    c.tracking.tag_version(
        c.model_name, candidate, {"gate.decision": "passed", "gate.champion_version": champion}
    )
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                model_evaluation_key("churn"), metadata={"challenger_version": candidate}
            )
        )
    config = {  # a window it cannot fill: still watching when it is killed
        "window_requests": 10**9, "timeout_seconds": 3600, "decision_rule": "fixed",
        "canary_weight": 0.3,
    }  # fmt: skip
    run_config = {"ops": {"churn__deployment": {"config": config}}}
    canary = {"production": champion, "candidate": candidate, "weight": 0.3, "mode": "canary"}
    log = tmp_path / "deployment-run.log"
    with Clients(c.lb, c.registry.holdout["churn"]) as clients:
        run = start(
            [*dagster, "--select", "churn/deployment", "--config-json", json.dumps(run_config)],
            env, log,
        )  # fmt: skip
        try:
            wait_until("the canary on every replica", lambda: _all(c, canary), 300, run, log)
            first = c.control().desired().rollout
            # the run renews its 4 s lease while it watches
            wait_until(
                "a renewed lease",
                lambda: c.control().desired().rollout.lease_expires_at > first.lease_expires_at,
                60, run, log,
            )  # fmt: skip
            with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
                deploying = instance.get_run_records(limit=1)[0].dagster_run  # the newest
            assert deploying.asset_selection == {deployment_key("churn")}
            assert deploying.status == dg.DagsterRunStatus.STARTED
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(30)
        finally:
            stop(run)
        # nobody deletes the tag: the lease runs out and each replica falls back by itself
        c.wait_all(alone(champion), "every replica back on the champion")
    left = c.control().desired()
    assert left.rollout is not None and left.rollout.rollout_id == first.rollout_id
    assert left.production == champion  # the alias never moved
    assert clients.failures == []
    assert set(clients.versions) == {champion, candidate}  # the canary did answer


def _all(c: Cluster, expected: dict) -> bool:
    return all(s == expected for s in c.states())


def test_a_blue_green_switch_through_the_balancer(champion_alone):
    c = champion_alone
    lb_admin = ServingClient(c.lb, TOKEN)

    def smoke(version):  # pinned smoke traffic (and plain traffic) through the balancer
        return Replay(lb_admin, "churn", c.registry.holdout["churn"], threads=2, version=version)

    with Clients(c.lb, c.registry.holdout["churn"]) as clients:
        result = roll(c, "challenger", traffic=smoke, strategy="blue_green", window_requests=60)
    assert result.decision == "promoted", result.reason
    assert result.candidate_stats["replicas"] == 3  # every replica answered the smoke traffic
    assert clients.failures == []
    assert set(clients.versions) <= {c.version("champion"), c.version("challenger")}
    assert c.states() == [alone(c.version("challenger"))] * 3
    answer = ServingClient(c.lb).predict("churn", c.registry.holdout["churn"][:1])
    assert (answer["status"], answer["model_version"]) == (200, c.version("challenger"))


def test_prometheus_judges_over_every_replica_and_refuses_a_target_that_is_down(
    champion_alone,
):
    c = champion_alone
    prom = PrometheusStats(c.prometheus, 'job="mlops-inference"')
    wait_until("three scraped replicas", lambda: _scraped(prom) == 3, 60)
    with pytest.raises(AnalysisError, match="are down"):
        PrometheusStats(c.prometheus, 'job="mlops-down"').targets_up()
    with pytest.raises(AnalysisError, match="scrapes no replica"):
        PrometheusStats(c.prometheus, 'job="no-such-job"').targets_up()

    # a candidate that fails every request: the servers export those 500s under its version
    # (its own replayed traffic: no clients here, a failing canary fails some of theirs by
    # definition)
    lb = ServingClient(c.lb)
    faulty = roll(
        c, "faulty", analysis=prom, canary_weight=0.3, window_requests=20,
        traffic=lambda v: Replay(lb, "churn", c.registry.holdout["churn"], threads=2),
    )  # fmt: skip
    assert faulty.decision == "rolled_back" and "error rate" in faulty.reason, faulty.reason
    c.wait_all(alone(c.version("champion")), "every replica back on the champion")

    with Clients(c.lb, c.registry.holdout["churn"]) as clients:
        slow = roll(c, "slow", analysis=prom, canary_weight=0.3, window_requests=40, max_p95_ms=40)
        c.wait_all(alone(c.version("champion")), "every replica back on the champion")
        good = roll(c, "challenger", analysis=prom, canary_weight=0.3, window_requests=60)
    assert slow.decision == "rolled_back" and "p95 latency" in slow.reason, slow.reason
    assert slow.candidate_stats["replicas"] == 3
    assert good.decision == "promoted", good.reason
    assert good.candidate_stats["requests"] >= 60 and good.candidate_stats["errors"] == 0
    assert clients.failures == []
    c.wait_all(alone(c.version("challenger")), "every replica on the challenger")


class Cuttable:
    """A TCP forwarder to the registry that the test cuts: for the one replica behind it the
    registry is then unreachable for real (connections refused), while everyone else's works."""

    def __init__(self, target: str):
        self.target = target.removeprefix("http://").split(":")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.is_cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.is_cut:  # an accept that raced the cut: refuse it, forward nothing
                    client.close()
                    return
                try:
                    upstream = socket.create_connection((self.target[0], int(self.target[1])))
                except OSError:
                    client.close()
                    continue
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        # shutdown() first: close() alone does not wake a thread blocked in accept() or recv(),
        # which then went on forwarding a reconnection made after the "cut"
        with self.lock:
            self.is_cut = True
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()


def test_a_replica_cut_off_from_the_registry_still_ends_an_expired_canary(champion_alone, tmp_path):
    """The lease is applied by each replica from the state it last read: a replica that can no
    longer reach the registry still drops a canary whose lease ran out, by itself."""
    c = champion_alone
    link = Cuttable(c.registry.tracking_uri)
    lone = Replica(free_port(), tmp_path / "lone", tmp_path / "lone.log")
    cmd = [str(BIN / "mlops"), "serve", "--port", str(lone.port), "--poll-seconds", "0.5"]
    lone.proc = start(
        cmd,
        {**c.env, "MLOPS_DATA_DIR": str(lone.data_dir), "MLFLOW_TRACKING_URI": link.url},
        lone.log,
    )
    try:
        c.wait_ready(lone)
        # The replicas compare the lease with their own clock. It must outlast the wait for
        # the canary and the cut (a minute was not always enough on a loaded machine).
        lease = _now() + 90
        canary = Rollout(
            "cut", c.version("challenger"), 0.3, "canary", lease, c.version("champion")
        )
        c.control().write(canary)
        expected = {
            "production": c.version("champion"),
            "candidate": c.version("challenger"),
            "weight": 0.3,
            "mode": "canary",
        }
        c.wait_all(expected, "the canary on the lone replica", [lone])
        link.cut()
        assert _now() < lease - 5, "the lease ran out before the link was cut: nothing tested"
        c.wait_all(alone(c.version("champion")), "the lone replica on the champion", [lone])
        # it decided alone: the registry still holds the (expired) tag nobody deleted
        assert c.control().desired().rollout == canary
        # and it said why it could not follow the registry
        assert "from the registry: TrackingUnavailable" in lone.log.read_text()
    finally:
        link.cut()
        stop(lone.proc)


def _scraped(prom: PrometheusStats) -> int:
    """Replicas Prometheus scrapes; 0 until its first scrape has reported them."""
    try:
        return prom.targets_up()
    except AnalysisError:
        return 0


def _now() -> float:
    import time

    return time.time()
