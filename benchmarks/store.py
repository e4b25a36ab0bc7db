"""The store soak: the prediction log's commit pattern, many times over, timed early and late.

Each commit adds one new small JSON-lines segment under ``predictions/<model>/<day>/`` and
keeps every earlier one, exactly as the prediction log's committer does (a store opened per
commit, ``ensure_repository``, ``put``, ``commit`` with the same message and metadata). The
segments carry explicit times (one every ``--interval`` seconds from 2026-11-01, UTC), never
the clock. By default a day holds exactly 10 % of the commits, so the first and the last
window each cover one whole day and "list today's prefix" compares days of the same size
(for 10,000 commits: one segment every 86.4 s, near the log's 60 s cadence).

For the first and the last 10 % of the commits it prints disk bytes per commit, commit
latency and read latency (a recent segment, the list of today's prefix, the log, the diff of
the last commit), and the late/early ratios.

    .venv/bin/python -m benchmarks.store [--commits 10000] [--layout trees|full-tree]

``--layout full-tree`` runs the store as it was before content-addressed trees (every commit
holds the full tree), loaded from git at ``FULL_TREE_REVISION``, for comparison.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlops_assets.store import Commit, VersionedStore
from mlops_assets.store.local import LocalStore

REPO = Path(__file__).resolve().parents[1]
# The last revision of the local store that wrote the full tree into every commit.
FULL_TREE_REVISION = "e3da0512595693539c9d32c1fa4ca2806a969c80"
START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
MODEL = "churn"


def full_tree_store_class() -> type[VersionedStore]:
    """The old LocalStore, from git (it is not kept in the product)."""
    try:
        source = subprocess.run(
            ["git", "show", f"{FULL_TREE_REVISION}:mlops_assets/store/local.py"],
            cwd=REPO,
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(
            f"bench-store: cannot read the full-tree store from git revision "
            f"{FULL_TREE_REVISION[:12]} ({e}); run from a git clone with its history"
        )
    module = types.ModuleType("full_tree_local")
    exec(compile(source, "full_tree_local.py", "exec"), module.__dict__)
    cls: type[VersionedStore] = module.LocalStore
    return cls


def segment(i: int, interval: float, rows: int) -> tuple[str, bytes]:
    """The i-th segment's path and bytes: ``rows`` logged requests, as the log writes them."""
    opened = START + dt.timedelta(seconds=i * interval)
    stamp = opened.strftime("%Y%m%dT%H%M%S%f")
    rng = random.Random(i)
    lines = []
    for r in range(rows):
        at = opened + dt.timedelta(seconds=r * interval / rows)
        record = {
            "timestamp": at.isoformat(timespec="milliseconds"),
            "request_id": f"{i:08d}-{r:03d}",
            "model": MODEL,
            "model_version": "7",
            "rows": 1,
            "inputs": {
                "tenure_months": [rng.randint(1, 72)],
                "monthly_charges": [round(rng.uniform(20, 120), 2)],
                "support_tickets": [rng.randint(0, 6)],
                "usage_hours": [round(rng.uniform(0, 300), 1)],
                "plan": [rng.choice(["basic", "standard", "premium"])],
                "region": [rng.choice(["north", "south", "east", "west"])],
            },
            "prediction": [rng.randint(0, 1)],
            "probability": [round(rng.random(), 4)],
        }
        lines.append(json.dumps(record, separators=(",", ":")))
    return f"predictions/{MODEL}/{stamp[:8]}/segment-{stamp}.jsonl", "\n".join(lines).encode()


def disk_usage(path: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of every file under ``path``."""
    apparent = allocated = 0
    for p in path.rglob("*"):
        st = p.lstat()
        if p.is_file():
            apparent += st.st_size
        allocated += st.st_blocks * 512
    return apparent, allocated


@dataclass
class Window:
    """What the commits of one window cost."""

    commits: int = 0
    disk_before: tuple[int, int] = (0, 0)
    disk_after: tuple[int, int] = (0, 0)
    ms: dict[str, list[float]] = field(default_factory=dict)

    def time(self, name: str, fn: Callable[..., object], *args: object) -> object:
        t = time.perf_counter()
        result = fn(*args)
        self.ms.setdefault(name, []).append((time.perf_counter() - t) * 1000)
        return result

    def per_commit(self, i: int) -> float:
        return (self.disk_after[i] - self.disk_before[i]) / self.commits


def soak(
    store_class: type[VersionedStore],
    root: Path,
    commits: int,
    interval: float,
    rows: int,
    reads_every: int = 1,
) -> tuple[Window, Window, float]:
    window = max(1, commits // 10)
    early, late = Window(), Window()
    repo = root / "predictions"
    started = time.perf_counter()
    paths: list[str] = []
    message = f"prediction log: 1 segment(s), {rows} row(s) of {MODEL}"
    meta = {"rows": str(rows), "segments": "1"}
    store_class(root, "predictions").ensure_repository()  # type: ignore[call-arg]
    for i in range(commits):
        measured = early if i < window else late if i >= commits - window else None
        if measured is not None and measured.commits == 0:
            measured.disk_before = disk_usage(repo)
        path, data = segment(i, interval, rows)
        paths.append(path)
        # As the prediction log's committer does: a store opened for each commit.
        store = store_class(root, "predictions")  # type: ignore[call-arg]
        store.ensure_repository()
        if measured is None:
            store.put("main", path, data)
            store.commit("main", message, meta)
        else:
            measured.time("put", store.put, "main", path, data)
            commit = measured.time("commit", store.commit, "main", message, meta)
            assert isinstance(commit, Commit)
            if measured.commits % reads_every == 0:
                today = path.rsplit("/", 1)[0] + "/"
                measured.time("get", store.get, "main", paths[max(0, len(paths) - 10)])
                measured.time("list", store.list, "main", today)
                measured.time("log", store.log, "main", 20)
                measured.time("diff", store.diff, commit.parents[0], commit.id)
            measured.commits += 1
            if measured.commits == window:
                measured.disk_after = disk_usage(repo)
        if (i + 1) % 1000 == 0:
            print(f"  {i + 1} commits, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return early, late, time.perf_counter() - started


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def _p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[-1] if len(xs) > 1 else xs[0]


def table(early: Window, late: Window) -> list[str]:
    rows: list[tuple[str, float, float, str]] = [
        ("bytes per commit (apparent)", early.per_commit(0), late.per_commit(0), "{:,.0f}"),
        ("bytes per commit (allocated)", early.per_commit(1), late.per_commit(1), "{:,.0f}"),
    ]
    labels = {
        "commit": "commit",
        "put": "put",
        "get": "get a recent segment at head",
        "list": "list today's prefix at head",
        "log": "log, 20 commits",
        "diff": "diff of the last commit",
    }
    for key, label in labels.items():
        e, la = early.ms[key], late.ms[key]
        rows.append((f"{label}, median ms", _median(e), _median(la), "{:.2f}"))
        if key == "commit":
            rows.append((f"{label}, p95 ms", _p95(e), _p95(la), "{:.2f}"))
    out = ["| | first 10 % | last 10 % | late/early |", "|---|---:|---:|---:|"]
    for label, e_val, l_val, fmt in rows:
        ratio = l_val / e_val if e_val else float("nan")
        out.append(f"| {label} | {fmt.format(e_val)} | {fmt.format(l_val)} | {ratio:.2f} |")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=10_000)
    parser.add_argument("--layout", choices=("trees", "full-tree"), default="trees")
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help="seconds between segments (default: a day holds 10 %% of the commits)",
    )
    parser.add_argument("--rows", type=int, default=5, help="requests per segment")
    parser.add_argument(
        "--reads-every",
        type=int,
        default=1,
        help="time the reads at every n-th commit of a window (the full-tree log is slow)",
    )
    parser.add_argument("--dir", default=None, help="where the repository goes (a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the repository afterwards")
    args = parser.parse_args(argv)
    if args.commits < 20:
        parser.error("--commits: at least 20 (two windows of 10 % each)")
    if args.interval is None:
        args.interval = 86400 / max(1, args.commits // 10)
    store_class = LocalStore if args.layout == "trees" else full_tree_store_class()
    root = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    try:
        print(
            f"bench-store: {args.commits} commits, layout {args.layout}, in {root}", file=sys.stderr
        )
        early, late, seconds = soak(
            store_class, root, args.commits, args.interval, args.rows, args.reads_every
        )
        apparent, allocated = disk_usage(root / "predictions")
        days = (args.commits - 1) * args.interval / 86400
        print(
            f"\nstore soak, layout {args.layout}: {args.commits:,} commits of one new segment "
            f"each ({args.rows} requests, one every {args.interval:g} s: {days:.1f} days), "
            f"{seconds:.0f} s"
        )
        print(
            f"disk: {apparent / 1e6:,.1f} MB apparent, {allocated / 1e6:,.1f} MB allocated "
            f"({apparent / args.commits:,.0f} / {allocated / args.commits:,.0f} bytes per commit)\n"
        )
        print("\n".join(table(early, late)))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
