"""Memory per connected device: Mosquitto, ``vigie server`` (SQLite) and the simulator.

    uv run python benchmarks/memory.py [--sizes 1000,10000] [--hb-interval 30]
                                       [--alert-rate 0.1] [--rounds 2] [--json FILE]

For each size, in a fresh process (so that what one size allocated does not hide the next):

1. a local Mosquitto from ``broker_config/`` and ``vigie server`` on SQLite start in a
   temporary folder (``device_sim.stack.LocalStack``; ``VIGIE_GEO_DIR`` is passed through, so
   the server holds its geographic index as in production);
2. after an idle pause, the resident memory of each process is read: ``VmRSS`` from
   ``/proc/<pid>/status`` and ``Pss`` from ``/proc/<pid>/smaps_rollup`` (when readable);
3. the N accounts are written into Mosquitto's password file (the load mode's test shortcut)
   and the broker reloaded; one of them connects, sends one alert, waits for its
   ``alert.received`` and leaves: what the server's first alert builds for every later one
   (its statements, the pipeline's and dispatch's threads) is paid here, once per process,
   and reported apart ("first alert"); memory is read again: this is "0 devices connected";
4. the simulator's load mode connects the N devices (heartbeat every ``--hb-interval`` s with
   a GPS fix, ``--alert-rate`` alerts per second over the fleet); once all are connected it
   waits ``--rounds`` heartbeat intervals plus two presence flushes, then reads memory again;
5. bytes per connected device = (memory with N connected − memory with 0 connected) / N, for
   the broker, the server, and the simulator (its own process: the devices' paho clients,
   timers, mobility state and counters). RSS, PSS, and their anonymous parts (heap, stacks)
   are all kept in the JSON; PSS splits shared library pages between every process mapping
   them, so it moves when unrelated processes start or stop: anonymous RSS is the steadiest.

The accounts' own cost in the broker (password hashes) is reported apart (step 3 − step 2).
The server does not know these devices (they exist on the broker only, as in
``benchmarks/load.py``): what it holds per device is what ingest and presence keep in memory
(the latest presence state of every device heard from); device rows are not in its database.
The baseline is the broker: its per-device figure is what holding one MQTT connection costs.

RSS growth is a lower bound for a process that freed memory before "0 connected" and keeps it
(the server parses the boundary files at start-up): new allocations fill those holes first.
The larger N, the less that matters; the figures at 10,000 devices are the ones to quote.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.benchlib import machine_info, memory_of, write_json
from device_sim.device import BrokerTarget
from device_sim.load import LoadConfig, LoadReport, LoadRun, Progress, load_passwords
from device_sim.provision import wait_credentials_active, write_broker_passwords
from device_sim.stack import LocalStack, raise_fd_limit

PRESENCE_FLUSH_S = 2.0  # the server's default presence_flush_s


def snapshot(pids: dict[str, int | str]) -> dict[str, dict[str, int | None]]:
    return {name: memory_of(pid) for name, pid in pids.items()}


def first_alert(port: int, device_id: str, password: str) -> None:
    """One alert from ``device_id``, until its ``alert.received``; then disconnect."""
    received = threading.Event()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5
    )
    client.username_pw_set(device_id, password)
    subscribed = threading.Event()
    client.on_connect = lambda cl, *a: cl.subscribe(f"vigie/v1/dev/{device_id}/cmd", 1)
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = lambda _c, _u, msg: (
        received.set() if json.loads(msg.payload).get("type") == "alert.received" else None
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        if not subscribed.wait(30):
            raise RuntimeError("first alert: the device could not subscribe")
        body = {
            "v": 1,
            "alert_id": "memory-first-alert",
            "kind": "sos",
            "ts": "2026-12-04T04:00:00Z",
            "pos": {"lat": 43.2965, "lon": 5.3698, "acc_m": 12, "src": "gps"},
        }
        client.publish(f"vigie/v1/dev/{device_id}/alert", json.dumps(body), qos=1)
        if not received.wait(30):
            raise RuntimeError("first alert: no alert.received within 30 s")
    finally:
        client.disconnect()
        client.loop_stop()


def measure_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """One size, in this process (which is also the simulator's process)."""
    raise_fd_limit(n * 2 + 1024)
    workdir = Path(tempfile.mkdtemp(prefix=f"vigie-mem-{n}-"))
    t_start = time.monotonic()
    stack = LocalStack(workdir=workdir).start()
    result: dict[str, Any] = {"devices": n}
    try:
        assert stack.mosquitto is not None and stack.mosquitto.process is not None
        assert stack.server is not None
        pids: dict[str, int | str] = {
            "broker": stack.mosquitto.process.pid,
            "server": stack.server.pid,
            "simulator": "self",
        }
        time.sleep(args.idle)
        empty = snapshot(pids)

        cfg = LoadConfig(
            devices=n,
            hb_interval_s=args.hb_interval,
            alert_rate=args.alert_rate,
            duration_s=10**6,  # stopped from here once measured
            drain_s=30,
            shards=args.shards,
            id_prefix="mem-",
        )
        passwords = load_passwords(cfg)
        t0 = time.monotonic()
        write_broker_passwords(stack.passwd_file, passwords, reload=stack.reload_broker)
        first = next(iter(passwords))
        if not wait_credentials_active("127.0.0.1", stack.device_port, first, passwords[first]):
            raise RuntimeError("the broker did not take the new accounts")
        result["provision_s"] = time.monotonic() - t0
        # The server's first alert builds what every later one reuses (its statements, the
        # pipeline's and dispatch's threads, the routing of a position): a cost paid once per
        # process, not per device. One alert from one device, before "0 connected", so that
        # the figure per device is what holding devices costs; the one-time cost is kept apart.
        before_first = snapshot(pids)
        first_alert(stack.device_port, first, passwords[first])
        time.sleep(PRESENCE_FLUSH_S + 3)
        after_first = snapshot(pids)
        run = LoadRun(
            cfg, BrokerTarget(port=stack.device_port), passwords, progress=Progress()
        )  # loads the commune index: part of the simulator's fixed cost
        del passwords
        gc.collect()
        time.sleep(PRESENCE_FLUSH_S + 1)
        zero = snapshot(pids)

        reports: list[LoadReport] = []
        errors: list[BaseException] = []

        def drive() -> None:
            try:
                reports.append(run.run())
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=drive, name="load-run", daemon=True)
        t_connect = time.monotonic()
        thread.start()
        deadline = t_connect + cfg.connect_timeout_s + 60 + n / 500
        while run.connect_s is None and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if errors:
            raise errors[0]
        connected = run.connected_count()
        result["connect_s"] = run.connect_s
        settle = args.rounds * args.hb_interval + 2 * PRESENCE_FLUSH_S + 1
        result["settle_s"] = settle
        samples = []
        settle_end = time.monotonic() + settle
        while time.monotonic() < settle_end:
            time.sleep(min(5.0, max(0.0, settle_end - time.monotonic())))
            samples.append(snapshot(pids))
        connected_after = run.connected_count()
        full = samples[-1]
        run.stop()
        thread.join(cfg.drain_s + 60)
        if errors:
            raise errors[0]
        report = reports[0] if reports else None
    finally:
        stack.stop()
    shutil.rmtree(workdir, ignore_errors=True)  # kept (server.log) only when the size failed

    result.update(
        connected=connected,
        connected_after_settle=connected_after,
        heartbeats=report.heartbeats if report else None,
        alerts_pressed=report.alerts_pressed if report else None,
        alerts_lost=report.alerts_lost if report else None,
        shards=len(run.reactor.shards),
        run_s=time.monotonic() - t_start,
        memory_kib={
            "empty": empty,
            "before_first_alert": before_first,
            "after_first_alert": after_first,
            "zero": zero,
            "connected": full,
        },
    )
    per: dict[str, dict[str, float | None]] = {}
    peak: dict[str, int | None] = {}
    for name in pids:
        per[name] = {}
        for key in ("rss_kib", "rss_anon_kib", "pss_kib", "pss_anon_kib"):
            a, b = zero[name][key], full[name][key]
            ok = a is not None and b is not None and connected > 0
            per[name][key.replace("_kib", "_bytes")] = (b - a) * 1024 / connected if ok else None
        if name == "broker":  # the password file's entries, before any connection
            acc_a, acc_b = empty[name]["rss_kib"], zero[name]["rss_kib"]
            per[name]["accounts_rss_bytes"] = (
                (acc_b - acc_a) * 1024 / n if acc_a is not None and acc_b is not None else None
            )
        a, b = before_first[name]["rss_kib"], after_first[name]["rss_kib"]
        per[name]["first_alert_rss_bytes"] = (
            (b - a) * 1024 if a is not None and b is not None else None
        )
        values = [s[name]["rss_kib"] for s in samples if s[name]["rss_kib"] is not None]
        peak[name] = max(values) if values else None
    result["per_device_bytes"] = per
    result["peak_rss_kib_while_settling"] = peak
    return result


def _kib(v: int | None) -> str:
    return "-" if v is None else f"{v / 1024:.1f}"


def _per_kib(v: float | None) -> float | None:
    return None if v is None else v / 1024


def _b(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def print_table(results: list[dict[str, Any]]) -> None:
    print(
        "\n| devices | process | RSS MiB, 0 connected | RSS MiB, N connected "
        "| bytes/device (RSS) | bytes/device (PSS) | bytes/device (anonymous RSS) "
        "| accounts, bytes/device (RSS) | first alert, KiB (RSS) |"
    )
    print("|---" * 9 + "|")
    for r in results:
        m = r["memory_kib"]
        for name in ("broker", "server", "simulator"):
            p = r["per_device_bytes"][name]
            label = {
                "broker": "Mosquitto",
                "server": "vigie server",
                "simulator": "simulator",
            }[name]
            print(
                f"| {r['connected']:,} | {label} | {_kib(m['zero'][name]['rss_kib'])} "
                f"| {_kib(m['connected'][name]['rss_kib'])} | {_b(p['rss_bytes'])} "
                f"| {_b(p['pss_bytes'])} | {_b(p['rss_anon_bytes'])} "
                f"| {_b(p.get('accounts_rss_bytes'))} "
                f"| {_b(_per_kib(p.get('first_alert_rss_bytes')))} |"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--hb-interval", type=float, default=30.0)
    ap.add_argument("--alert-rate", type=float, default=0.1)
    ap.add_argument("--rounds", type=float, default=2.0, help="heartbeat rounds to wait")
    ap.add_argument("--idle", type=float, default=5.0, help="pause after start-up (s)")
    ap.add_argument("--shards", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    ap.add_argument("--one-size", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--part-json", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.one_size is not None:  # child: one size, result to --part-json
        res = measure_size(args.one_size, args)
        write_json(args.part_json, res)
        return

    results = []
    with tempfile.TemporaryDirectory(prefix="vigie-mem-parts-") as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            part = Path(tmp) / f"{n}.json"
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--one-size",
                str(n),
                "--part-json",
                str(part),
                "--hb-interval",
                str(args.hb_interval),
                "--alert-rate",
                str(args.alert_rate),
                "--rounds",
                str(args.rounds),
                "--idle",
                str(args.idle),
                "--shards",
                str(args.shards),
            ]
            print(f"# {n:,} devices (fresh process)", flush=True)
            subprocess.run(cmd, check=True)
            res = json.loads(part.read_text())
            results.append(res)
            print(
                f"  all connected in {res['connect_s'] or float('nan'):.1f} s "
                f"({res['connected']:,} connected, {res['connected_after_settle']:,} after "
                f"{res['settle_s']:.0f} s), {res['heartbeats']:,} heartbeats, "
                f"{res['alerts_pressed']} alerts ({res['alerts_lost']} lost)",
                flush=True,
            )
    info = machine_info()
    print(
        f"\n{info['date_utc']} — {info['nproc']} vCPU {info['cpu']}, {info['ram_gib']} GiB, "
        f"Python {info['python']}, Linux {info['kernel']}, Mosquitto {info['mosquitto']}; "
        f"heartbeat every {args.hb_interval:g} s, {args.alert_rate:g} alerts/s, "
        f"measured {args.rounds:g} heartbeat rounds after the last connection"
    )
    print_table(results)
    write_json(
        args.json,
        {
            "benchmark": "memory",
            "machine": info,
            "config": {
                "sizes": [r["devices"] for r in results],
                "hb_interval_s": args.hb_interval,
                "alert_rate": args.alert_rate,
                "rounds": args.rounds,
            },
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
