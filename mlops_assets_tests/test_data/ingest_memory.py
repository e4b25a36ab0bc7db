"""Peak memory of ``mlops ingest churn --file BIG.csv`` on a file of N rows.

    python -m mlops_assets_tests.test_data.ingest_memory 1000000

Writes an N-row churn CSV (in chunks: this process stays small too), then runs the real CLI on
a fresh DAGSTER_HOME in a child process and prints one JSON line: rows, file size, the child's
peak resident memory (ru_maxrss of the waited child), seconds, exit code and the CLI's output.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_assets_tests.processes import BIN, REPO, fresh_home


def write_churn_csv(path: Path, rows: int, chunk: int = 100_000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with path.open("w", encoding="utf-8", newline="") as out:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            frame = pd.DataFrame(
                {
                    "customer_id": [f"c{start + i:09d}" for i in range(n)],
                    "snapshot_date": "2026-11-01",
                    "tenure_months": rng.integers(0, 240, n),
                    "monthly_charges": rng.uniform(0, 1000, n).round(2),
                    "support_tickets": rng.integers(0, 50, n),
                    "usage_hours": rng.uniform(0, 744, n).round(1),
                    "plan": rng.choice(["basic", "standard", "premium"], n),
                    "region": rng.choice(["north", "south", "east", "west"], n),
                    "churned": rng.integers(0, 2, n),
                }
            )
            # columns in another order than the spec's: the audit reads them by name
            frame = frame[list(reversed(frame.columns))]
            frame.to_csv(out, index=False, header=start == 0)


def measure(rows: int, workdir: Path) -> dict:
    csv = workdir / "big.csv"
    write_churn_csv(csv, rows)
    env = fresh_home(workdir)
    started = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "mlops"), "--no-report", "ingest", "churn", "--file", str(csv), "--name", "big"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    seconds = time.monotonic() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    return {
        "rows": rows,
        "file_mb": round(csv.stat().st_size / 1e6, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "seconds": round(seconds, 1),
        "exit_code": proc.returncode,
        "stdout": proc.stdout.strip(),
        "stderr_tail": proc.stderr.strip().splitlines()[-3:],
    }


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(measure(n, Path(tmp))))
