"""The closed loop, driven and timed: a drifted batch lands while traffic flows, and the
platform (the real daemon and inference server) retrains, gates and rolls out by itself.

``python -m benchmarks.loop --rounds 3`` (``scripts/bench-loop.sh``) prints the time from
"drifted commit lands" to "retrained model takes all traffic", with a breakdown, and the code
location's load time against an empty one. The end-to-end test drives the same ``Platform``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mlops_assets import procs
from mlops_assets.defs.keys import LOOP_STEPS

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class Round:
    """What one round of the loop did, and how long each part took (seconds)."""

    commit: str
    started_at: float
    version_before: str | None
    version_after: str | None
    decision: str
    reason: str
    run_id: str | None
    trigger: str | None
    total: float
    parts: dict[str, float] = field(default_factory=dict)


class Platform:
    """The inference server and dagster-daemon on a DAGSTER_HOME, as ``scripts/run.sh`` runs
    them, each in its own session. Sets the environment of this process to match, so library
    calls (ingest, the instance) see the same platform."""

    def __init__(
        self, home: Path, end: dt.date, spec: str = "churn", log_seconds: float = 2.0
    ) -> None:
        self.home = Path(home)
        self.end = end  # the last day of demo data; rounds land the days after it
        self.spec_name = spec
        self.port = procs.free_port()
        self.specs_dir = self.home / "specs"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MLFLOW_", "MLOPS_", "DAGSTER_", "LAKEFS_"))
        }
        self.env.update(
            DAGSTER_HOME=str(self.home),
            MLOPS_SPECS_DIR=str(self.specs_dir),
            MLOPS_SERVING_PORT=str(self.port),
            MLOPS_LOG_SEGMENT_SECONDS=str(log_seconds),
        )
        self.server: subprocess.Popen | None = None
        self.daemons: list[subprocess.Popen] = []
        self.url = f"http://127.0.0.1:{self.port}"

    # ---- setup ---------------------------------------------------------------------------

    def prepare(self, days: int = 10, rows: int = 300) -> None:
        """A fresh instance with one model spec, its demo data, and a first model in production."""
        from mlops_assets.specs.model import SPECS_DIR

        self.home.mkdir(parents=True, exist_ok=True)
        self.specs_dir.mkdir(exist_ok=True)
        shutil.copy(Path(SPECS_DIR) / f"{self.spec_name}.yaml", self.specs_dir)
        shutil.copy(REPO / "dagster.yaml", self.home / "dagster.yaml")
        os.environ.update(
            {k: v for k, v in self.env.items() if k.startswith(("MLOPS_", "DAGSTER_"))}
        )
        self._cli(
            [
                *(str(BIN / "mlops"), "seed", "--days", str(days), "--rows", str(rows)),
                *("--end", self.end.isoformat()),
            ]
        )
        self._cli(
            [
                str(BIN / "dagster"),
                "asset",
                "materialize",
                "-m",
                "mlops_assets.definitions",
                "--select",
                f"*{self.spec_name}/model_evaluation",
            ]
        )

    def _cli(self, cmd: list[str]) -> None:
        done = subprocess.run(
            cmd, env=self.env, cwd=REPO, capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            out = (done.stdout + done.stderr)[-3000:]
            raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{out}")

    def start(self) -> None:
        self.server = procs.start(
            [str(BIN / "mlops"), "serve", "--port", str(self.port), "--poll-seconds", "1"],
            self.env,
            self.home / "serve.log",
            cwd=REPO,
        )
        self.start_daemon()
        procs.wait_until(
            "inference server",
            lambda: self.production() is not None,
            120,
            self.server,
            self.home / "serve.log",
        )
        self.settle()

    def settle(self, quiet_seconds: float = 8.0, timeout: float = 300) -> None:
        """Wait until no run is queued or running for ``quiet_seconds`` (the automation has
        caught up), so a round starts from rest."""
        import dagster as dg

        from mlops_assets.defs.monitoring.sensors import IN_FLIGHT

        quiet_since = time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.instance() as instance:
                busy = instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT), limit=1)
            if busy:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_seconds:
                return
            time.sleep(0.5)
        raise TimeoutError(f"runs still queued or running after {timeout:.0f} s")

    def start_daemon(self) -> None:
        log = self.home / "daemon.log"
        proc = procs.start(
            [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
            self.env,
            log,
            cwd=REPO,
        )
        self.daemons.append(proc)
        since = time.time()

        def beating() -> bool:
            with self.instance() as instance:
                beats = instance.get_daemon_heartbeats()
            return "SENSOR" in beats and beats["SENSOR"].timestamp > since

        procs.wait_until("dagster-daemon", beating, 120, proc, log)

    def kill_daemon(self) -> None:
        """SIGKILL the daemon alone (not its group): a crash; runs it launched go on."""
        proc = self.daemons[-1]
        proc.kill()
        proc.wait(10)

    def stop(self) -> None:
        for proc in [*self.daemons, *([self.server] if self.server else [])]:
            procs.stop(proc)

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- observing ---------------------------------------------------------------------

    @staticmethod
    def instance():
        import dagster as dg

        return dg.DagsterInstance.get()

    def _token(self) -> str:
        return (self.home / "mlops-data" / "serving" / "token").read_text().strip()

    def deployment_state(self) -> dict:
        r = httpx.get(
            f"{self.url}/admin/deployments/{self.spec_name}",
            headers={"Authorization": f"Bearer {self._token()}"},
            timeout=10,
        )
        r.raise_for_status()
        return r.json()

    def production(self) -> str | None:
        try:
            state = self.deployment_state()
        except (httpx.HTTPError, OSError):
            return None
        return state.get("production")

    def serving_shares(self, requests: int = 40) -> dict[str, int]:
        """Which version answered each of ``requests`` real requests."""
        from mlops_assets.demo.traffic import send_traffic
        from mlops_assets.specs.model import get_spec

        spec = get_spec(self.spec_name)
        day = self.end + dt.timedelta(days=1)
        result = send_traffic(self.url, spec, day, rows=requests, batch=1, seed=99)
        return result.versions


class Traffic:
    """Clients sending drifted requests in the background; labels delivered after each burst."""

    def __init__(self, platform: Platform, drift: str, day: dt.date):
        self.platform, self.drift, self.day = platform, drift, day
        self.stop_event = threading.Event()
        self.errors: list[str] = []
        self.rows = 0
        self.thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self) -> None:
        from mlops_assets import settings
        from mlops_assets.demo.traffic import send_traffic
        from mlops_assets.monitoring.labels import commit_labels, labels_repository
        from mlops_assets.specs.model import get_spec
        from mlops_assets.store import open_store

        spec = get_spec(self.platform.spec_name)
        store = open_store("local", labels_repository(spec), root=str(settings.store_root()))
        seed = 1000
        while not self.stop_event.is_set():
            seed += 1
            result = send_traffic(
                self.platform.url, spec, self.day, rows=100, batch=10, drift=self.drift, seed=seed
            )
            self.errors.extend(result.errors)
            self.rows += result.rows
            commit_labels(store, spec, result.labels)
            self.stop_event.wait(0.5)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join(60)


def land_batch(spec_name: str, day: dt.date, drift: str) -> str:
    """Commit one simulated day through write-audit-publish and report it, as `mlops ingest`."""
    from mlops_assets import settings
    from mlops_assets.cli import report_to_dagster
    from mlops_assets.demo.simulator import simulate_batch, to_csv_bytes
    from mlops_assets.ingest import ingest_batch
    from mlops_assets.specs.model import get_spec
    from mlops_assets.store import open_store

    spec = get_spec(spec_name)
    store = open_store("local", spec.dataset.repository, root=str(settings.store_root()))
    batch = to_csv_bytes(simulate_batch(spec.simulator, day, rows=400, drift=drift))
    result = ingest_batch(store, spec, batch, f"day-{day}-{drift}", {"drift": drift})
    if not result.published:
        raise RuntimeError(result.summary())
    report_to_dagster(result)
    return result.main_commit


def loop_runs(instance, since: float, step: str = "trained_model") -> list:
    """Runs created after ``since`` that materialize ``step`` of the loop, oldest first."""
    out = []
    for record in instance.get_run_records(limit=100):
        run = record.dagster_run
        keys = {k.path[-1] for k in (run.asset_selection or ())}
        if record.create_timestamp.timestamp() >= since and step in keys:
            out.append(record)
    return sorted(out, key=lambda r: r.create_timestamp)


def _outcome(instance, spec_name: str, since: float) -> tuple[str, str] | None:
    """The loop's decision after ``since``: promoted / rolled_back (deployment) or refused."""
    import dagster as dg

    from mlops_assets.defs.monitoring.sensors import latest_evaluation

    dep = instance.get_latest_materialization_event(dg.AssetKey([spec_name, "deployment"]))
    if dep is not None and dep.timestamp >= since:
        meta = {k: v.value for k, v in dep.asset_materialization.metadata.items()}
        return str(meta["decision"]), str(meta["reason"])
    key = dg.AssetCheckKey(dg.AssetKey([spec_name, "model_evaluation"]), "promotion_gate")
    record, evaluation = latest_evaluation(instance, key)
    if record is not None and record.event.timestamp >= since and not evaluation.passed:
        return "refused", evaluation.description or "refused by the gate"
    return None


def run_round(
    platform: Platform,
    day: dt.date,
    drift: str = "covariate_shift",
    timeout: float = 300,
    during=None,
) -> Round:
    """Land a drifted batch under traffic; wait for the new model to serve (or be refused or
    rolled back). ``during(run_record)`` is called once the loop's run has started."""
    import dagster as dg

    before = platform.production()
    with Traffic(platform, drift, day) as traffic:
        time.sleep(1.0)  # traffic is flowing before the batch lands
        t0 = time.time()
        commit = land_batch(platform.spec_name, day, drift)
        outcome, served_at, called = None, None, during is None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with platform.instance() as instance:
                if not called:
                    runs = loop_runs(instance, t0)
                    if runs and runs[0].dagster_run.status == dg.DagsterRunStatus.STARTED:
                        during(runs[0])
                        called = True
                outcome = outcome or _outcome(instance, platform.spec_name, t0)
            if outcome and outcome[0] != "promoted":
                served_at = time.time()
                break
            now = platform.production()
            if now is not None and now != before and outcome:
                served_at = time.time()
                break
            time.sleep(0.25)
        if served_at is None:
            raise TimeoutError(
                f"the loop did not finish within {timeout:.0f} s of commit {commit[:12]} "
                f"(outcome so far: {outcome}); see {platform.home}/daemon.log"
            )
        platform.settle(quiet_seconds=2)  # the loop's runs finish before the next round
        if traffic.errors:
            raise AssertionError(
                f"clients saw {len(traffic.errors)} failed request(s): {traffic.errors[:3]}"
            )
    with platform.instance() as instance:
        return _breakdown(instance, platform, commit, before, t0, served_at, outcome)


def _breakdown(instance, platform, commit, before, t0, served_at, outcome) -> Round:
    import dagster as dg

    runs = loop_runs(instance, t0)
    parts: dict[str, float] = {}
    run_id = trigger = None
    if runs:
        record = runs[0]
        run = record.dagster_run
        run_id, trigger = run.run_id, run.tags.get("mlops/trigger")
        created = record.create_timestamp.timestamp()
        parts["commit → run requested"] = created - t0
        if record.start_time:
            parts["run queued → started"] = record.start_time - created
    # the steps, wherever they ran (one run, or two if a step was still busy when data landed)
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    step_runs: set[str] = set()
    for step in LOOP_STEPS:
        found = loop_runs(instance, t0, step)
        if not found:
            continue
        step_runs.add(found[0].dagster_run.run_id)
        key = f"{platform.spec_name}__{step}"
        for e in instance.all_logs(
            found[0].dagster_run.run_id,
            of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS},
        ):
            if e.step_key == key:
                (starts if e.dagster_event.is_step_start else ends)[step] = e.timestamp
    if runs and runs[0].start_time and starts:
        parts["run started → first step (code load)"] = min(starts.values()) - runs[0].start_time
    for step in LOOP_STEPS:
        if step in starts and step in ends:
            parts[f"step {step}"] = ends[step] - starts[step]
    parts["runs it took"] = float(len(step_runs))
    return Round(
        commit=commit,
        started_at=t0,
        version_before=before,
        version_after=platform.production(),
        decision=outcome[0],
        reason=outcome[1],
        run_id=run_id,
        trigger=trigger,
        total=served_at - t0,
        parts=parts,
    )


def load_times(repeats: int = 3) -> tuple[float, float]:
    """Median seconds to import and build our Definitions vs. an empty code location."""
    ours = "import mlops_assets.definitions as d; d.defs()"
    empty = "import dagster as dg; dg.Definitions()"

    def timed(code: str) -> float:
        script = f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
        out = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", script],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        return float(out.stdout.strip().splitlines()[-1])

    return (
        statistics.median(timed(ours) for _ in range(repeats)),
        statistics.median(timed(empty) for _ in range(repeats)),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary DAGSTER_HOME")
    parser.add_argument(
        "--end",
        type=dt.date.fromisoformat,
        default=dt.date.today() - dt.timedelta(days=1),
        help="last day of the seeded demo data, YYYY-MM-DD (default: yesterday)",
    )
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="mlops-loop-"))
    rounds: list[Round] = []
    try:
        print(f"loop bench: preparing {home} (seed, first model)", flush=True)
        with Platform(home, args.end) as platform:
            platform.prepare()
            platform.start()
            for i in range(args.rounds):
                day = args.end + dt.timedelta(days=i + 1)
                r = run_round(platform, day)
                rounds.append(r)
                print(
                    f"round {i + 1}: v{r.version_before} → v{r.version_after} {r.decision} in "
                    f"{r.total:.1f} s (trigger {r.trigger})",
                    flush=True,
                )
                time.sleep(5)  # let monitoring settle between rounds
        ours, empty = load_times()
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    print(_table(rounds, ours, empty))
    return 0


def _table(rounds: list[Round], ours: float, empty: float) -> str:
    names: list[str] = []
    for r in rounds:
        names += [n for n in r.parts if n not in names]
    lines = [
        f"| part | median s | {' | '.join(f'round {i + 1}' for i in range(len(rounds)))} |",
        f"|---|---:|{'---:|' * len(rounds)}",
    ]
    for name in [*names, "total: commit → new model serves 100%"]:
        values = [r.total if name.startswith("total") else r.parts.get(name) for r in rounds]
        present = [v for v in values if v is not None]
        fmt = "{:.0f}" if name == "runs it took" else "{:.1f}"
        median = fmt.format(statistics.median(present)) if present else "-"
        cells = " | ".join("-" if v is None else fmt.format(v) for v in values)
        lines.append(f"| {name} | {median} | {cells} |")
    lines += [
        "",
        f"decisions: {', '.join(r.decision for r in rounds)}",
        "peer: a daily drift-check cron (the common setup) reacts within 24 h = 86,400 s",
        f"code location load: {ours:.2f} s (an empty Definitions: {empty:.2f} s)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
