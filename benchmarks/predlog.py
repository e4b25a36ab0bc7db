"""What durability costs the prediction log: requests/s of concurrent "requests" that each
log one row, (a) answered without waiting for the log (the old behaviour: the row is only
queued), (b) answered once the row is written, (c) once it is written and fdatasync'ed
(group commit: one sync per group of waiting requests). In-process, on the real writer
thread and real files, no model and no HTTP, so it shows the log's own cost at its worst.

    .venv/bin/python -m benchmarks.predlog [--seconds 3] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from mlops_assets.serving.predlog import PredictionLog

ROW = {
    "tenure_months": [12.0],
    "monthly_charges": [70.5],
    "support_tickets": [1.0],
    "usage_hours": [120.0],
    "plan": ["standard"],
    "region": ["north"],
}
OUT = {"prediction": [0], "probability": [0.23]}


async def _load(log: PredictionLog, mode: str, concurrency: int, seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def client(k: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < deadline:
            rid = f"{k}-{i}"
            if mode == "queued":
                log.append("churn", "1", rid, ROW, OUT)
                await asyncio.sleep(0)  # answer: hand the loop to the next request
            else:
                await log.write("churn", "1", rid, ROW, OUT)
            done += 1
            i += 1

    start = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    return done / (time.perf_counter() - start)


def measure(root: Path, seconds: float) -> list[tuple[str, int, float, float]]:
    out = []
    for concurrency in (1, 8, 64):
        for mode, fsync in (("queued", False), ("written", False), ("fsynced", True)):
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                log = PredictionLog(Path(tmp), commit=None, segment_rows=10**9, fsync=fsync)
                rate = asyncio.run(_load(log, mode, concurrency, seconds))
                syncs, rows = log.syncs, log.rows_written["churn"]
                log.close()
            out.append((mode, concurrency, rate, rows / max(syncs, 1)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = p.parse_args()
    rows = measure(args.dir, args.seconds)
    base = {c: r for m, c, r, _ in rows if m == "queued"}
    print(f"{'mode':8} {'c':>3} {'req/s':>9} {'vs queued':>9} {'rows/sync':>9}")
    for mode, c, rate, per_sync in rows:
        print(f"{mode:8} {c:>3} {rate:>9.0f} {rate / base[c]:>9.2f} {per_sync:>9.1f}")


if __name__ == "__main__":
    main()
