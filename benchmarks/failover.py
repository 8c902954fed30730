"""mosquitto#2662, measured: press → alert stored when one of three servers on a shared
subscription is SIGKILLed, with and without the session rescue (``VIGIE_MQTT_SESSION_RESCUE``,
``alert_server/ingest/rescue.py``).

    uv run python benchmarks/failover.py [--devices 60] [--alert-rate 2] [--duration 30]
                                         [--kill-at 5] [--modes rescue,none] [--json FILE]

For each mode: one Mosquitto and one PostgreSQL database of the benchmark's own, three
``vigie server`` processes (``$share/vigie``, MQTT 5, one-day sessions), a simulated fleet
(``device_sim``: heartbeats every 5 s at QoS 0, alerts at ``--alert-rate``/s; an unreceipted alert
is re-sent after 5 s, then every 10 s, ±20 %). ``server-1`` is SIGKILLed ``--kill-at`` seconds
into the pressing and never restarted. Figures for the alerts pressed after the kill:
press → ``alert.received`` at the device (after the commit) and press → the alert row's
``created_at`` (``press_to_stored``: set when a live server read the message; one clock),
p50/p95/max, how many took over 2 s, and the device re-sends.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.benchlib import machine_info, postgres_version, write_json
from device_sim.device import BrokerTarget
from device_sim.geo import CommuneIndex
from device_sim.load import LoadConfig, LoadRun, load_passwords, percentile
from device_sim.provision import wait_credentials_active, write_broker_passwords
from tests.support import ServerProcess, server_env
from vigie.brokers.mosquitto import LocalMosquitto
from vigie.timeutil import as_utc

PG_ADMIN_DSN = os.environ.get("VIGIE_TEST_PG_DSN", "postgresql://127.0.0.1:5432/test")
SLOW_MS = 2000.0


def _pg_url(name: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}"


def _stored_at(db_name: str, ids: list[str]) -> dict[str, float]:
    dsn = f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{db_name}"
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT alert_id, created_at FROM alert WHERE alert_id = ANY(%s)", (ids,)
        ).fetchall()
    return {str(a): as_utc(t).timestamp() for a, t in rows}


def _dist(values: list[float]) -> dict[str, float | None]:
    return {
        "p50_ms": percentile(values, 50),
        "p95_ms": percentile(values, 95),
        "max_ms": max(values) if values else None,
        "over_2s": float(sum(1 for v in values if v > SLOW_MS)),
    }


def run_mode(
    mode: str, args: argparse.Namespace, work: Path, index: CommuneIndex
) -> dict[str, Any]:
    name = f"vigie_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = _pg_url(name)
    broker = LocalMosquitto(work / f"mosquitto-{mode}").start()
    servers: list[ServerProcess] = []
    try:
        for i in range(3):
            env = server_env(
                broker,
                db_url,
                VIGIE_MQTT_SHARED_GROUP="vigie",
                VIGIE_MQTT_CLIENT_ID=f"vigie-server-{i}",
                VIGIE_MQTT_SESSION_RESCUE="1" if mode == "rescue" else "0",
                VIGIE_PRESENCE_FLUSH_S="1",
                VIGIE_LOG_FORMAT="plain",
            )
            s = ServerProcess(env, work / f"{mode}-server-{i}.log")
            servers.append(s)
            s.start()  # one after the other: the first migrates
        cfg = LoadConfig(
            devices=args.devices,
            hb_interval_s=5.0,
            alert_rate=args.alert_rate,
            duration_s=args.duration,
            drain_s=60.0,
            departements=["13", "84"],
            id_prefix=f"fo-{mode}-",
            seed=2662,
            progress_interval_s=10.0,
        )
        passwords = load_passwords(cfg)
        write_broker_passwords(broker.passwd_file, passwords, reload=broker.reload)
        first = next(iter(passwords))
        assert wait_credentials_active("127.0.0.1", broker.port, first, passwords[first])
        run = LoadRun(cfg, BrokerTarget(port=broker.port), passwords, index=index)
        killed_at: list[float] = []

        def kill() -> None:
            while run.connect_s is None and not run._stop.is_set():
                time.sleep(0.05)
            time.sleep(args.kill_at)
            killed_at.append(time.time())
            servers[1].kill()

        killer = threading.Thread(target=kill, daemon=True)
        killer.start()
        report = run.run()
        killer.join(30)
        assert killed_at, "the kill did not happen"
        records = [r for _, r in run._records()]
        after = [r for r in records if r.pressed_wall >= killed_at[0]]
        stored = _stored_at(name, [r.alert_id for r in after])
        to_stored = [
            (stored[r.alert_id] - r.pressed_wall) * 1000 for r in after if r.alert_id in stored
        ]
        to_receipt = [r.latency_s * 1000 for r in after if r.latency_s is not None]
        rescue_lines = [
            line
            for s in servers
            for line in s.log().splitlines()
            if "rescue of vigie-server-1" in line
        ]
        out = {
            "mode": mode,
            "devices": args.devices,
            "alerts_pressed": len(records),
            "alerts_after_kill": len(after),
            "not_stored": len(after) - len(stored),
            "press_to_stored": _dist(to_stored),
            "press_to_received": _dist(to_receipt),
            "device_resends_after_kill": sum(max(0, r.sends - 1) for r in after),
            "alerts_lost": report.alerts_lost,
            "rescue_log": rescue_lines[-3:],
        }
        d, r = out["press_to_stored"], out["press_to_received"]
        print(
            f"{mode}: {len(after)} alerts after the kill, press → stored p50 {d['p50_ms']:.0f} ms "
            f"p95 {d['p95_ms']:.0f} ms max {d['max_ms']:.0f} ms ({d['over_2s']:.0f} over 2 s); "
            f"→ alert.received max {r['max_ms']:.0f} ms; "
            f"re-sends {out['device_resends_after_kill']}; not stored {out['not_stored']}",
            flush=True,
        )
        for line in rescue_lines[-3:]:
            print("  " + line, flush=True)
        return out
    finally:
        for s in servers:
            s.stop()
        broker.stop()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=60)
    p.add_argument("--alert-rate", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--kill-at", type=float, default=5.0)
    p.add_argument("--modes", default="rescue,none")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    geo = Path(os.environ.get("VIGIE_GEO_DIR", Path(__file__).resolve().parents[2] / "shared/geo"))
    index = CommuneIndex.load(geo / "communes-index.csv")
    work = Path(tempfile.mkdtemp(prefix="vigie-bench-failover-"))
    runs = []
    try:
        for mode in args.modes.split(","):
            runs.append(run_mode(mode, args, work, index))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_json(
        args.json,
        {
            "machine": machine_info(),
            "postgresql": postgres_version(PG_ADMIN_DSN),
            "load_average": os.getloadavg(),
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
