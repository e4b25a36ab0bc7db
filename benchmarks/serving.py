"""Benchmark the inference server against MLServer and ``mlflow models serve`` on the same
model, in the same run, with ``wrk`` as the load generator (a separate process), and against a
floor: the model's ONNX graph in ONNX Runtime behind a minimal handler (benchmarks/floor.py).
Each peer runs at its best documented setting: every setting listed below is tried at c=8 and
the fastest is measured in full.

    scripts/bench.sh            # installs wrk and the peers, then runs this

Scenarios: single-row requests at concurrency 1, 8 and 64, and 1,000-row batches at concurrency 1.
Reported per server: p50/p95/p99 latency, requests/s, errors, RSS after the run and startup
time (spawn to ready). Our server runs as in production: validation, metrics, routing and the
prediction log all on.

MLServer's scikit-learn runtime loads a joblib file, so the peer gets the same fitted pipeline
saved with joblib in a temporary folder (benchmark only; the platform itself never pickles).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Mlops-Synthetic"] = "bench"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT %d %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _rss_mb(pgid: int) -> float:
    """Resident memory of every process in the group (server plus its workers)."""
    total = 0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if os.getpgid(int(p.name)) != pgid:
                continue
            m = re.search(r"VmRSS:\s+(\d+) kB", (p / "status").read_text())
            total += int(m.group(1)) if m else 0
        except (OSError, ProcessLookupError):
            continue
    return total / 1024


class Target:
    def __init__(self, name, cmd, env, ready_url, predict_url, body_single, body_batch, log):
        self.name, self.cmd, self.env = name, cmd, env
        self.ready_url, self.predict_url = ready_url, predict_url
        self.bodies = {"single": body_single, "batch": body_batch}
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None
        self.error: str | None = None

    def start(self, timeout: float = 180) -> bool:
        import signal

        def reset():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)

        t0 = time.monotonic()
        out = open(self.log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=reset,
        )
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                self.error = f"exited with {self.proc.returncode}, see {self.log}"
                return False
            if _get_ok(self.ready_url):
                self.startup_s = time.monotonic() - t0
                return self._check()
            time.sleep(0.1)
        self.error = f"not ready after {timeout:.0f}s, see {self.log}"
        return False

    def _check(self) -> bool:
        req = urllib.request.Request(
            self.predict_url,
            data=self.bodies["single"],
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                if r.status == 200:
                    return True
                self.error = f"sample request answered {r.status}"
        except OSError as e:
            body = e.read().decode()[:300] if hasattr(e, "read") else ""
            self.error = f"sample request failed: {e} {body}"
        return False

    def stop(self) -> None:
        import signal

        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass


def _wrk(url: str, body: bytes, connections: int, seconds: int, work: Path) -> dict:
    body_file = work / f"body-{abs(hash(body))}.json"
    body_file.write_bytes(body)
    script = work / f"script-{abs(hash(body))}.lua"
    script.write_text(LUA.replace("{body}", str(body_file)))
    threads = min(connections, 2)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    m = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out.stdout)
    if not m:
        raise RuntimeError(f"wrk printed no result: {out.stdout}\n{out.stderr}")
    n, dur, errs, non2xx, p50, p95, p99 = map(int, m.groups())
    return {
        "requests": n,
        "rps": n / (dur / 1e6),
        "errors": errs + non2xx,
        "p50_ms": p50 / 1000,
        "p95_ms": p95 / 1000,
        "p99_ms": p99 / 1000,
    }


def _prepare(work: Path, rows_per_day: int):
    """Seed demo data, train the churn champion, register it in an embedded MLflow store."""
    os.environ["MLOPS_DATA_DIR"] = str(work / "data")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLOPS_SPECS_DIR", None)
    import mlflow

    from mlops_assets.demo.seeding import seed_demo
    from mlops_assets.featurize import SPLIT, build_features
    from mlops_assets.quality import load_dataset
    from mlops_assets.specs.model import get_spec
    from mlops_assets.store.local import LocalStore
    from mlops_assets.training.evaluate import evaluate
    from mlops_assets.training.run import lineage_tags, train_and_log
    from mlops_assets.training.tracking import register, tracking_from_env
    from mlops_assets.training.train import records, split

    spec = get_spec("churn")
    store = LocalStore(work / "data" / "lakefs-local", spec.dataset.repository)
    seed_demo(store, spec, 14, rows_per_day)
    head = store.head("main")
    files = {p: store.get(head, p) for p in store.list(head, spec.dataset.prefix)}
    features = build_features(load_dataset(files, spec.dataset)[0], spec)
    tracking = tracking_from_env()
    tracking.configure()
    mlflow.set_experiment(experiment_id=tracking.ensure_experiment(spec))
    tags = lineage_tags(spec, spec.model, head, spec.dataset.repository)
    with mlflow.start_run() as run:
        logged = train_and_log(tracking, spec, features, spec.model, tags)
    version = register(tracking, spec.model_name, logged.model_uri, run.info.run_id, tags).version
    # Through the platform's own gate, as a trained model reaches production: it promotes the
    # version and checks its ONNX graph's parity, so our server runs what it runs in production.
    x, y = split(features, spec, "holdout")
    gate = evaluate(tracking, spec, version, x, y, spec.evaluation)
    if not gate.decision.promote:
        raise RuntimeError(f"the benchmark's model was refused by its gate: {gate.decision}")
    print(f"bench: version {version} gated; ONNX parity: {gate.parity}", flush=True)
    holdout = records(features[features[SPLIT] == "holdout"], spec)
    return spec, logged.trained.pipeline, version, holdout, tracking.tracking_uri


def _v2_body(spec, rows: list[dict]) -> bytes:
    inputs = []
    for f in spec.features:
        numeric = f in spec.numeric_features
        inputs.append(
            {
                "name": f,
                "shape": [len(rows)],
                "datatype": "FP64" if numeric else "BYTES",
                "data": [
                    (r[f] if r[f] is not None else float("nan")) if numeric else r[f] for r in rows
                ],
            }
        )
    return json.dumps(
        {
            "parameters": {"content_type": "pd"},
            "inputs": inputs,
            "outputs": [{"name": "predict_proba"}],
        }
    ).encode()


SCENARIOS = [
    ("1 row, c=1", "single", 1),
    ("1 row, c=8", "single", 8),
    ("1 row, c=64", "single", 64),
    ("1,000 rows, c=1", "batch", 1),
]

# MLServer's documented performance settings: adaptive batching (max_batch_size requests,
# waiting at most max_batch_time seconds) and parallel inference workers. Each is tried at
# c=8 and the best one is measured in full.
MLSERVER_CONFIGS = [
    ("no batching, 0 workers", {"parallel_workers": 0}),
    (
        "batch 8 / 2 ms, 0 workers",
        {"parallel_workers": 0, "max_batch_size": 8, "max_batch_time": 0.002},
    ),
    (
        "batch 16 / 5 ms, 0 workers",
        {"parallel_workers": 0, "max_batch_size": 16, "max_batch_time": 0.005},
    ),
    (
        "batch 8 / 2 ms, 2 workers",
        {"parallel_workers": 2, "max_batch_size": 8, "max_batch_time": 0.002},
    ),
    ("no batching, 2 workers", {"parallel_workers": 2}),
]


def _ours(bin_dir: Path, env: dict, bodies: tuple[bytes, bytes], work: Path) -> Target:
    port = _free_port()
    return Target(
        "mlops-assets",
        [str(bin_dir / "mlops"), "serve", "--port", str(port), "--poll-seconds", "0"],
        {**env, "MLOPS_SERVING_TOKEN": "bench"},
        f"http://127.0.0.1:{port}/v2/models/churn/ready",
        f"http://127.0.0.1:{port}/predict",
        *bodies,
        work / "ours.log",
    )


def _mlserver(
    mlserver: Path,
    env: dict,
    bodies: tuple[bytes, bytes],
    work: Path,
    pipeline,
    version: str,
    config: dict,
) -> Target:
    """MLServer's scikit-learn runtime loads a joblib file: the same fitted pipeline, saved with
    joblib for the benchmark only (the platform itself never pickles)."""
    import joblib

    root = Path(tempfile.mkdtemp(prefix="mlserver-", dir=work))
    model_dir = root / "churn"
    model_dir.mkdir()
    joblib.dump(pipeline, model_dir / "model.joblib")
    batching = {k: config[k] for k in ("max_batch_size", "max_batch_time") if k in config}
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "churn",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": version},
                **batching,
            }
        )
    )
    port = _free_port()
    workers = config.get("parallel_workers", 0)
    (root / "settings.json").write_text(
        json.dumps(
            {
                "http_port": port,
                "grpc_port": _free_port(),
                "metrics_port": _free_port(),
                "parallel_workers": workers,
            }
        )
    )
    return Target(
        "MLServer",
        [str(mlserver), "start", str(root)],
        {**env, "MLSERVER_PARALLEL_WORKERS": str(workers)},
        f"http://127.0.0.1:{port}/v2/models/churn/ready",
        f"http://127.0.0.1:{port}/v2/models/churn/infer",
        *bodies,
        root / "mlserver.log",
    )


def _mlflow(
    bin_dir: Path,
    env: dict,
    bodies: tuple[bytes, bytes],
    work: Path,
    spec,
    version: str,
    tracking_uri: str,
    workers: int,
) -> Target:
    port = _free_port()
    return Target(
        "mlflow models serve",
        [
            str(bin_dir / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{spec.model_name}/{version}",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            str(workers),
        ],
        {
            **env,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
        },
        f"http://127.0.0.1:{port}/ping",
        f"http://127.0.0.1:{port}/invocations",
        *bodies,
        work / f"mlflow-{workers}.log",
    )


def _floor(bin_dir: Path, env: dict, bodies: tuple[bytes, bytes], work: Path, onnx: Path):
    port = _free_port()
    return Target(
        "floor",
        [str(bin_dir / "python"), "-m", "benchmarks.floor", str(onnx), str(port)],
        env,
        f"http://127.0.0.1:{port}/",
        f"http://127.0.0.1:{port}/",
        *bodies,
        work / "floor.log",
    )


def _measure(target: Target, scenarios, seconds: int, work: Path) -> dict:
    """Start ``target``, run each scenario with wrk, record RSS, stop it."""
    try:
        if not target.start():
            return {"error": target.error}
        res: dict = {"startup_s": target.startup_s}
        for label, body, conns in scenarios:
            res[label] = _wrk(target.predict_url, target.bodies[body], conns, seconds, work)
        assert target.proc is not None
        res["rss_mb"] = _rss_mb(target.proc.pid)
        return res
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        target.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=int, default=10, help="duration of each wrk scenario")
    p.add_argument("--tune-seconds", type=int, default=5, help="per peer setting tried at c=8")
    p.add_argument("--rows-per-day", type=int, default=400)
    p.add_argument("--peers-venv", default=".venv-bench", help="venv with mlserver(-sklearn)")
    p.add_argument("--only", action="append", help="run only these servers (repeatable)")
    args = p.parse_args(argv)
    if not shutil.which("wrk"):
        print("bench: wrk is not installed: run scripts/bench.sh (it installs it)", file=sys.stderr)
        return 2

    repo = Path(__file__).resolve().parents[1]
    bin_dir = Path(sys.executable).parent
    peers = repo / args.peers_venv / "bin" / "mlserver"
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-"))
    print(f"bench: preparing the churn model in {work} ...", flush=True)
    spec, pipeline, version, records, tracking_uri = _prepare(work, args.rows_per_day)
    # rows without missing values: every peer must accept the same JSON (no NaN literals)
    complete = [r for r in records if all(v is not None for v in r.values())]
    single, batch = complete[:1], (complete * (1000 // len(complete) + 1))[:1000]

    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LAKEFS_"))}
    base_env["MLOPS_DATA_DIR"] = str(work / "data")
    bodies = {
        "ours": (
            json.dumps({"model": "churn", "records": single}).encode(),
            json.dumps({"model": "churn", "records": batch}).encode(),
        ),
        "v2": (_v2_body(spec, single), _v2_body(spec, batch)),
        "mlflow": (
            json.dumps({"dataframe_records": single}).encode(),
            json.dumps({"dataframe_records": batch}).encode(),
        ),
    }
    makers = {
        "mlops-assets": [("as shipped", lambda: _ours(bin_dir, base_env, bodies["ours"], work))],
        "MLServer": [
            (
                label,
                lambda c=c: _mlserver(peers, base_env, bodies["v2"], work, pipeline, version, c),
            )
            for label, c in MLSERVER_CONFIGS
        ]
        if peers.exists()
        else [],
        "mlflow models serve": [
            (
                f"{w} worker(s)",
                lambda w=w: _mlflow(
                    bin_dir, base_env, bodies["mlflow"], work, spec, version, tracking_uri, w
                ),
            )
            for w in (1, 2)
        ],
    }
    from mlops_assets.training.onnx_export import convert

    conversion = convert(pipeline, spec)
    if conversion.data is not None:
        onnx_file = work / "floor.onnx"
        onnx_file.write_bytes(conversion.data)
        makers["floor"] = [
            (
                "ONNX Runtime, minimal handler",
                lambda: _floor(bin_dir, base_env, bodies["ours"], work, onnx_file),
            )
        ]
    else:
        print(f"bench: no floor: the model does not convert to ONNX ({conversion.reason})")
    if args.only:
        makers = {k: v for k, v in makers.items() if k in args.only}

    results: dict[str, dict] = {}
    tuning: list[tuple[str, str, dict]] = []
    for name, configs in makers.items():
        best = configs[0][0]
        if len(configs) > 1:  # a peer at its best: each documented setting at c=8, keep the best
            best_rps = -1.0
            for label, make in configs:
                print(f"bench: tuning {name}: {label} ...", flush=True)
                r = _measure(make(), [("1 row, c=8", "single", 8)], args.tune_seconds, work)
                tuning.append((name, label, r))
                rps = r.get("1 row, c=8", {}).get("rps", -1.0)
                if rps > best_rps:
                    best, best_rps = label, rps
        print(f"bench: {name} ({best}) ...", flush=True)
        make = dict(configs)[best]
        results[name] = {"config": best, **_measure(make(), SCENARIOS, args.seconds, work)}

    print()
    print(
        f"churn model: {type(getattr(pipeline, 'estimator', pipeline)[-1]).__name__}, "
        f"{len(spec.features)} features; "
        f"wrk {args.seconds}s per scenario; {os.cpu_count()} CPU(s)"
    )
    if tuning:
        print()
        print("peer settings tried at 1 row, c=8 (the best is measured below):")
        print()
        print("| server | setting | req/s | p95 ms |")
        print("|---|---|---:|---:|")
        for name, label, r in tuning:
            c8 = r.get("1 row, c=8")
            print(
                f"| {name} | {label} | {c8['rps']:.0f} | {c8['p95_ms']:.1f} |"
                if c8
                else f"| {name} | {label} | failed: {r.get('error')} | |"
            )
    print()
    print(
        "| server | setting | scenario | req/s | p50 ms | p95 ms | p99 ms | errors | RSS MB "
        "| startup s |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, res in results.items():
        if "error" in res:
            print(f"| {name} | {res['config']} | failed: {res['error']} | | | | | | | |")
            continue
        for label, _, _ in SCENARIOS:
            r = res[label]
            print(
                f"| {name} | {res['config']} | {label} | {r['rps']:.0f} | {r['p50_ms']:.1f} "
                f"| {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} "
                f"| {res['rss_mb']:.0f} | {res['startup_s']:.1f} |"
            )
    ours = results.get("mlops-assets", {})
    print()
    for peer in ("MLServer", "mlflow models serve", "floor"):  # floor: our distance to it
        other = results.get(peer, {})
        if "1 row, c=8" in ours and "1 row, c=8" in other:
            a, b = ours["1 row, c=8"], other["1 row, c=8"]
            print(
                f"at c=8 vs {peer} ({other['config']}): {a['rps'] / b['rps']:.2f}x its "
                f"requests/s, p95 {a['p95_ms'] / b['p95_ms']:.2f}x its"
                + (" (target: >= 3x, <= 0.33x)" if peer == "MLServer" else "")
            )
    if any("error" in r for r in results.values()) or any("error" in r for *_, r in tuning):
        print(f"\nbench: logs kept in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
