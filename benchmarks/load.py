"""Load benchmark: the simulator's load mode against a local Mosquitto and ``vigie server`` on
SQLite, for several fleet sizes, in one process per size.

    uv run python benchmarks/load.py [--sizes 1000,10000] [--hb-interval 30] [--alert-rate 5]
                                     [--duration 60] [--shards 0] [--out DIR]
                                     [--baseline] [--json FILE]

Devices are provisioned straight into Mosquitto's password file (test shortcut; the server
stores their alerts flagged ``unknown_device``). For each size it prints the load report and
a Markdown row, and writes ``load-<size>.json`` into ``--out``. The server's own counters
(``/metrics``) cross-check what the devices saw: alerts stored must equal alerts pressed.

``--baseline`` first runs the same fleet (same devices, heartbeats, alert process) against a
fresh Mosquitto with a bare paho "echo" instead of the server: it answers each alert at once
with ``alert.received`` and stores nothing (``load-<size>-baseline.json``). Press →
``alert.received`` there is what the broker, the simulator and the wire cost at that size.
``--json FILE`` writes every size's figures (and the baselines) in one file.

Beside the MQTT fleet run ``--osmand`` Traccar Client phones (positions, SOS answered 200 only
once stored) and ``--buttons`` MQTT buttons (Shelly, zigbee2mqtt, Tasmota in turn; QoS 0 presses
counted on the server's side), registered through one ``vigie devices import`` before the
server starts (it reads the buttons file at start). The server logs JSON lines; their rate per
minute is given for its start-up, ``--idle`` seconds with nothing connected, the fleet
connecting, the load and the drain, with the kinds of line that make them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alert_server.demo import DEMO_DIRECTORY
from benchmarks import loglines
from benchmarks.benchlib import MqttEcho, machine_info, write_json
from device_sim.device import BrokerTarget
from device_sim.gateway_cli import GatewayMix, prepare_gateways, start_gateways
from device_sim.load import LoadConfig, LoadReport, LoadRun, Progress, load_passwords
from device_sim.provision import wait_credentials_active, write_broker_passwords
from device_sim.stack import LocalStack, raise_fd_limit
from dispatch.models import KIND_ALERT, Notification
from vigie.topics import SERVER_USERNAME


def db_first_notifications(db_url: str) -> Any:
    """When the first SMS or call of each alert left for the telephony (dispatch's rows):
    what a referent's phone sees, measured on the server side of the provider call."""
    from sqlalchemy import func, select

    from alert_server.db import make_engine
    from vigie.timeutil import as_utc

    def fetch(alert_ids: list[str]) -> dict[str, datetime | None]:
        engine = make_engine(db_url)
        t = Notification.__table__  # type: ignore[attr-defined]
        out: dict[str, datetime | None] = dict.fromkeys(alert_ids)
        try:
            with engine.connect() as conn:
                for i in range(0, len(alert_ids), 500):
                    rows = conn.execute(
                        select(t.c.alert_id, func.min(t.c.sent_at))
                        .where(t.c.kind == KIND_ALERT, t.c.sent_at.is_not(None))
                        .where(t.c.alert_id.in_(alert_ids[i : i + 500]))
                        .group_by(t.c.alert_id)
                    ).all()
                    for alert_id, first in rows:
                        out[alert_id] = as_utc(first)
        finally:
            engine.dispose()
        return out

    return fetch


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem_kib = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "ram_gib": f"{mem_kib / 1024 / 1024:.1f}",
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(url: str, name: str) -> float:
    total = 0.0
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def button_check(db_url: str, presses: list[tuple[str, float]]) -> dict[str, Any]:
    """What the server stored for the buttons' presses (they publish at QoS 0 with no event
    id: the only account is on the server's side). Presses and stored alerts are matched in
    order per device; press → stored is the press's wall time to the alert's arrival time at
    the server (``created_at``), press → first notification to its first SMS or call."""
    from sqlalchemy import select

    from alert_server.alerts.models import Alert
    from alert_server.db import make_engine
    from vigie.timeutil import as_utc

    devices = sorted({d for d, _ in presses})
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            t = Alert.__table__  # type: ignore[attr-defined]
            rows = conn.execute(
                select(t.c.device_id, t.c.alert_id, t.c.created_at)
                .where(t.c.device_id.in_(devices))
                .order_by(t.c.id)
            ).all()
    finally:
        engine.dispose()
    stored: dict[str, list[tuple[str, datetime]]] = {d: [] for d in devices}
    for device_id, alert_id, created_at in rows:
        stored[device_id].append((alert_id, as_utc(created_at)))
    pressed: dict[str, list[float]] = {d: [] for d in devices}
    for device_id, at in presses:
        pressed[device_id].append(at)
    to_stored, matched = [], []
    for d in devices:
        for at, (alert_id, created) in zip(pressed[d], stored[d], strict=False):
            to_stored.append((created.timestamp() - at) * 1000)
            matched.append((alert_id, at))
    first = db_first_notifications(db_url)([a for a, _ in matched]) if matched else {}
    to_first = [
        (as_utc(first[a]).timestamp() - at) * 1000 for a, at in matched if first.get(a) is not None
    ]
    n_stored = sum(len(v) for v in stored.values())
    return {
        "presses": len(presses),
        "stored": n_stored,
        "lost": sum(max(0, len(pressed[d]) - len(stored[d])) for d in devices),
        "extra": sum(max(0, len(stored[d]) - len(pressed[d])) for d in devices),
        "press_to_stored": _dist(to_stored),
        "press_to_first_notification": {**_dist(to_first), "missing": len(matched) - len(to_first)},
    }


def _dist(values: list[float]) -> dict[str, float | int | None]:
    from device_sim.load import percentile

    return {
        "count": len(values),
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values) if values else None,
    }


def run_size(n: int, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    raise_fd_limit(n * 2 + 1024)
    workdir = Path(tempfile.mkdtemp(prefix=f"vigie-load-{n}-"))
    # The demo's referent directory (fictional numbers) and the simulated telephony: every
    # alert is routed and its first SMS "sent", so press → first notification is measured.
    directory = workdir / "referents.yaml"
    directory.write_text(DEMO_DIRECTORY, encoding="utf-8")
    stack = LocalStack(workdir=workdir, extra_env={"VIGIE_REFERENTS_FILE": str(directory)})
    stack.start(with_server=False)
    mix: GatewayMix | None = None
    mix_stopped = False
    periods: dict[str, tuple[float, float]] = {}
    try:
        # Traccar Client phones and MQTT buttons: registered through one `vigie devices
        # import`, before the server starts (it reads the buttons file at start).
        t0 = time.monotonic()
        plan = prepare_gateways(stack, osmand=args.osmand, buttons=args.buttons, seed=1)
        register_s = time.monotonic() - t0
        started = time.time()
        stack.start_server()
        healthy = time.time()
        periods["start-up"] = (started, healthy)
        # Idle: the server up, nothing connected yet (its steady state with no traffic).
        time.sleep(args.idle)
        periods["idle (nothing connected)"] = (healthy, time.time())
        cfg = LoadConfig(
            devices=n,
            hb_interval_s=args.hb_interval,
            alert_rate=args.alert_rate,
            duration_s=args.duration,
            drain_s=60,
            shards=args.shards,
            id_prefix="bench-",
        )
        passwords = load_passwords(cfg)
        t0 = time.monotonic()
        write_broker_passwords(stack.passwd_file, passwords, reload=stack.reload_broker)
        first = next(iter(passwords))
        assert wait_credentials_active("127.0.0.1", stack.device_port, first, passwords[first])
        provision_s = time.monotonic() - t0
        mix = start_gateways(
            plan,
            stack,
            sos_rate=args.osmand_sos_rate,
            position_every_s=args.hb_interval,
            press_rate=args.button_rate,
            seed=1,
        )
        mix.start()
        assert stack.mosquitto is not None and stack.mosquitto.process is not None
        assert stack.server is not None
        broker_pid, server_pid = stack.mosquitto.process.pid, stack.server.pid
        cpu0 = (cpu_s(broker_pid), cpu_s(server_pid))
        report: LoadReport = LoadRun(
            cfg,
            BrokerTarget(port=stack.device_port),
            passwords,
            progress=Progress(),
            first_notifications=db_first_notifications(stack.db_url),
        ).run()
        mix.stop()
        mix_stopped = True
        cpu1 = (cpu_s(broker_pid), cpu_s(server_pid))
        stored = metric(stack.http_url, "vigie_alerts_stored_total")
        repeats = metric(stack.http_url, "vigie_alert_repeats_total")
        time.sleep(2)  # the last lines reach the log file
    finally:
        if mix is not None and not mix_stopped:
            mix.stop()
        stack.stop()
    labels = {"connect": "fleet connecting", "load": "under load", "drain": "drain"}
    for name, (a, b) in report.phases.items():
        periods[labels.get(name, name)] = (a, b)
    logs = loglines.rates(loglines.read_log(workdir / "server.log"), periods)
    data = report.to_json()
    data["register_gateways_s"] = register_s
    data["provision_s"] = provision_s
    data["server_alerts_stored"] = stored
    data["server_alert_repeats"] = repeats
    data["broker_cpu_s"] = cpu1[0] - cpu0[0]
    data["server_cpu_s"] = cpu1[1] - cpu0[1]
    data["osmand"] = mix.phones.to_json() if mix.phones is not None else None
    data["buttons"] = (
        {**mix.buttons.to_json(), **button_check(stack.db_url, mix.buttons.presses)}
        if mix.buttons is not None
        else None
    )
    data["server_log"] = logs
    data["server_log_file"] = str(workdir / "server.log")
    (out_dir / f"load-{n}.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    print(report.summary())
    print(mix.summary())
    if data["buttons"] is not None:
        b = data["buttons"]
        print(
            f"Boutons côté serveur : {b['stored']} alertes stockées pour {b['presses']} appuis "
            f"({b['lost']} perdus, {b['extra']} en trop) ; appui → stockée p50 "
            f"{_ms(b['press_to_stored']['p50_ms'])} ms, p99 {_ms(b['press_to_stored']['p99_ms'])} "
            f"ms ; appui → première notification p50 "
            f"{_ms(b['press_to_first_notification']['p50_ms'])} ms"
        )
    print(
        f"serveur : {stored:.0f} alertes stockées, {repeats:.0f} répétitions ; CPU broker "
        f"{data['broker_cpu_s']:.1f} s, serveur {data['server_cpu_s']:.1f} s ; "
        f"comptes écrits en {provision_s:.1f} s ; {args.osmand} téléphones et "
        f"{args.buttons} boutons enregistrés en {register_s:.1f} s (vigie devices import)"
    )
    print("\nJournal du serveur (JSON), lignes par minute :")
    print(loglines.table(logs))
    for name, r in logs.items():
        if r["top"]:
            print(f"  {name} :")
            for count, kind in r["top"]:
                print(f"    {count:6d}  {kind}")
    return data


def run_baseline_size(n: int, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """The same fleet against Mosquitto and a bare echo subscriber (no server)."""
    raise_fd_limit(n * 2 + 1024)
    workdir = Path(tempfile.mkdtemp(prefix=f"vigie-load-base-{n}-"))
    stack = LocalStack(workdir=workdir, with_server=False).start()
    echo: MqttEcho | None = None
    try:
        assert stack.mosquitto is not None and stack.mosquitto.process is not None
        echo = MqttEcho(
            "127.0.0.1",
            stack.mosquitto.server_port,
            SERVER_USERNAME,
            stack.mosquitto.server_password,
        )
        cfg = LoadConfig(
            devices=n,
            hb_interval_s=args.hb_interval,
            alert_rate=args.alert_rate,
            duration_s=args.duration,
            drain_s=60,
            shards=args.shards,
            id_prefix="bench-",
        )
        passwords = load_passwords(cfg)
        write_broker_passwords(stack.passwd_file, passwords, reload=stack.reload_broker)
        first = next(iter(passwords))
        assert wait_credentials_active("127.0.0.1", stack.device_port, first, passwords[first])
        broker_pid = stack.mosquitto.process.pid
        cpu0 = cpu_s(broker_pid)
        report: LoadReport = LoadRun(
            cfg, BrokerTarget(port=stack.device_port), passwords, progress=Progress()
        ).run()
        broker_cpu = cpu_s(broker_pid) - cpu0
        echo_alerts = echo.alerts
    finally:
        if echo is not None:
            echo.close()
        stack.stop()
    data = report.to_json()
    data["baseline"] = "bare paho echo"
    data["echo_alerts_seen"] = echo_alerts
    data["broker_cpu_s"] = broker_cpu
    (out_dir / f"load-{n}-baseline.json").write_text(
        json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    )
    print("baseline (bare paho echo, no server):")
    print(report.summary())
    return data


def row(d: dict[str, Any]) -> str:
    r = d["press_to_received"]
    lag = d["simulator_lag"]
    return (
        f"| {d['devices']:,} | {d['config']['shards']} | {d['connect_s']:.1f} "
        f"| {d['heartbeats']:,} | {d['alerts_pressed']} | {d['alerts_lost']} "
        f"| {d['duplicate_receipts']} "
        f"| {d['server_alerts_stored']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
        f"| {r['max_ms']:.1f} | {lag['p99_ms']:.1f} | {d['cpu_s']:.0f} / {d['broker_cpu_s']:.0f} "
        f"/ {d['server_cpu_s']:.0f} | {d['max_rss_mib']:.0f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--hb-interval", type=float, default=30.0)
    ap.add_argument("--alert-rate", type=float, default=5.0)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--shards", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "vigie-load-bench")
    ap.add_argument(
        "--baseline", action="store_true", help="also run each size against a bare paho echo"
    )
    ap.add_argument("--json", type=Path, default=None, help="all sizes' figures in one file")
    ap.add_argument("--osmand", type=int, default=20, help="Traccar Client phones (OsmAnd)")
    ap.add_argument("--osmand-sos-rate", type=float, default=0.2, help="their SOS per second")
    ap.add_argument(
        "--buttons", type=int, default=12, help="MQTT buttons (Shelly, zigbee2mqtt, Tasmota)"
    )
    ap.add_argument("--button-rate", type=float, default=0.2, help="their presses per second")
    ap.add_argument(
        "--idle", type=float, default=60.0, help="seconds of idle server before the fleet"
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine()
    results = []
    baselines: list[dict[str, Any]] = []
    for n in args.sizes.split(","):
        if args.baseline:
            baselines.append(run_baseline_size(int(n), args, args.out))
        results.append(run_size(int(n), args, args.out))
    print(
        f"\n{info['date']} — {info['nproc']} vCPU {info['cpu']}, {info['ram_gib']} GiB, "
        f"Python {info['python']}, Linux {info['kernel']}"
    )
    print(
        f"heartbeat every {args.hb_interval:g} s, {args.alert_rate:g} alerts/s, "
        f"{args.duration:g} s per run\n"
    )
    print(
        "| devices | shards | all connected (s) | heartbeats | alerts | lost | dup. receipts "
        "| stored (server, all kinds) | p50 ms | p99 ms | max ms | sim lag p99 ms "
        "| CPU s sim / broker / server | sim RSS MiB |"
    )
    print("|---" * 14 + "|")
    for d in results:
        print(row(d))
    print(
        "\n| devices | press → first notification: alerts | p50 ms | p99 ms | max ms "
        "| not notified |"
    )
    print("|---" * 6 + "|")
    for d in results:
        n = d.get("press_to_first_notification") or {}
        print(
            f"| {d['devices']:,} | {n.get('count', 0)} | {_ms(n.get('p50_ms'))} "
            f"| {_ms(n.get('p99_ms'))} | {_ms(n.get('max_ms'))} | {n.get('missing', '?')} |"
        )
    if baselines:
        print("\n| devices | press → alert.received | alerts | lost | p50 ms | p99 ms | max ms |")
        print("|---" * 7 + "|")
        for b, d in zip(baselines, results, strict=True):
            for label, x in (("bare paho echo (baseline)", b), ("vigie server (SQLite)", d)):
                r = x["press_to_received"]
                print(
                    f"| {x['devices']:,} | {label} | {x['alerts_pressed']} | {x['alerts_lost']} "
                    f"| {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | {_ms(r['max_ms'])} |"
                )
    write_json(
        args.json,
        {
            "benchmark": "load",
            "machine": {**machine_info(), **info},
            "config": {
                "sizes": [int(n) for n in args.sizes.split(",")],
                "hb_interval_s": args.hb_interval,
                "alert_rate": args.alert_rate,
                "duration_s": args.duration,
            },
            "vigie": results,
            "baseline": baselines or None,
        },
    )
    print(f"\nJSON: {args.out}")


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


if __name__ == "__main__":
    main()
