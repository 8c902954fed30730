"""Ingest writer benchmark: what storing one alert costs the writer thread, in process.

    uv run python benchmarks/writer.py [--alerts 400] [--db sqlite|postgresql] [--json FILE]

No broker and no other thread: the real ``Ingestor._commit`` (interpret, store, timeline
events, commit, receipt handed to the downlink) on a migrated database, for new alerts (one
device each) and for presses joining a running incident (one device pressing again), one per
transaction and 100 per transaction (the writer's batches under load). Figures are the writer
thread's CPU time per alert (``time.thread_time``), which a busy machine inflates far less than
wall time, and wall time beside it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alert_server.db import migrate
from alert_server.ingest.handler import Inbound, Ingestor
from benchmarks.benchlib import machine_info, write_json
from tests.writer_support import alert_item, in_process_writer
from vigie.persistence import make_engine

PG_ADMIN = "postgresql://127.0.0.1:5432/test"


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def measure(ingestor: Ingestor, items: list[Inbound], batch: int) -> dict[str, float]:
    cpu: list[float] = []
    wall: list[float] = []
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        c0, w0 = time.thread_time(), time.perf_counter()
        ingestor._commit(chunk)
        cpu.append((time.thread_time() - c0) * 1000 / len(chunk))
        wall.append((time.perf_counter() - w0) * 1000 / len(chunk))
    return {
        "cpu_p50_ms": _pct(cpu, 50),
        "cpu_p99_ms": _pct(cpu, 99),
        "wall_p50_ms": _pct(wall, 50),
        "wall_p99_ms": _pct(wall, 99),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", type=int, default=400)
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vigie-writer-"))
    dbname = None
    if args.db == "sqlite":
        url = f"sqlite:///{tmp / 'vigie.db'}"
    else:
        dbname = f"vigie_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        url = f"postgresql+psycopg://127.0.0.1:5432/{dbname}"
    engine = make_engine(url)
    results: dict[str, dict[str, float]] = {}
    try:
        migrate(engine)
        with in_process_writer(engine) as writer:
            n = args.alerts
            # Caches and statements warmed first.
            measure(writer.ingestor, [alert_item(f"warm-{i}") for i in range(50)], 1)
            cases: list[tuple[str, Callable[[int], str], int]] = [
                ("new alert, one per transaction", lambda i: f"new-{i}", 1),
                ("press joining its incident, one per transaction", lambda i: "presser-1", 1),
                ("new alert, 100 per transaction", lambda i: f"bnew-{i}", 100),
                ("press joining its incident, 100 per transaction", lambda i: "presser-2", 100),
            ]
            for name, device, batch in cases:
                items = [alert_item(device(i)) for i in range(n)]
                results[name] = measure(writer.ingestor, items, batch)
    finally:
        engine.dispose()
        if dbname:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')
    print(f"\ningest writer, {args.db}, {args.alerts} alerts per case (per alert, ms)")
    print("| case | CPU p50 | CPU p99 | wall p50 | wall p99 |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['cpu_p50_ms']:.3f} | {r['cpu_p99_ms']:.3f} | "
            f"{r['wall_p50_ms']:.3f} | {r['wall_p99_ms']:.3f} |"
        )
    out: dict[str, Any] = {
        "benchmark": "writer",
        "machine": machine_info(),
        "config": {"alerts": args.alerts, "db": args.db},
        "cases": results,
    }
    write_json(args.json, out)


if __name__ == "__main__":
    main()
