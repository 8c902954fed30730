"""Ingest benchmark: alerts/s and heartbeats/s through the real broker into the real server,
and publish → ``alert.received`` latency, beside a bare paho subscriber on the same broker.

    uv run python benchmarks/ingest.py [--devices 100] [--alerts 2000] [--db sqlite|postgresql]
                                       [--heartbeats 20000] [--json FILE]

The baseline is an "echo" subscriber: it receives each alert on the server account and
immediately publishes a reply on the device's cmd topic, with no storage. The difference with
Vigie is the cost of validating, committing and acknowledging.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.benchlib import MqttEcho, machine_info, postgres_version, write_json
from tests.support import ServerProcess, server_env, wait_until
from vigie.brokers import files as broker_files
from vigie.brokers.mosquitto import LocalMosquitto
from vigie.topics import SERVER_USERNAME


class BenchDevice:
    def __init__(self, device_id: str, password: str, port: int) -> None:
        self.device_id = device_id
        self.sent: dict[str, float] = {}
        self.latency_ms: list[float] = []
        self.receipts = 0
        self._lock = threading.Lock()
        ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        c.username_pw_set(device_id, password)
        c.max_inflight_messages_set(100)
        c.on_connect = lambda cl, *a: cl.subscribe(f"vigie/v1/dev/{device_id}/cmd", 1)
        c.on_subscribe = lambda *a: ready.set()
        c.on_message = self._on_message
        c.on_socket_open = lambda cl, u, s: s.setsockopt(6, 1, 1)  # TCP_NODELAY
        c.connect("127.0.0.1", port)
        c.loop_start()
        assert ready.wait(10)
        self.client = c

    def _on_message(self, client: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        body = json.loads(msg.payload)
        with self._lock:
            t0 = self.sent.pop(body.get("alert_id"), None)
            if t0 is not None:
                self.latency_ms.append((now - t0) * 1000)
                self.receipts += 1

    def alert(self) -> str:
        aid = str(uuid.uuid4())
        payload = json.dumps(
            {
                "v": 1,
                "alert_id": aid,
                "kind": "sos",
                "ts": "2026-11-22T18:04:05Z",
                "pos": {"lat": 43.2965, "lon": 5.3698, "acc_m": 12, "src": "gps"},
            }
        )
        with self._lock:
            self.sent[aid] = time.perf_counter()
        self.client.publish(f"vigie/v1/dev/{self.device_id}/alert", payload, qos=1)
        return aid

    def heartbeat(self, qos: int) -> None:
        self.client.publish(
            f"vigie/v1/dev/{self.device_id}/hb",
            b'{"v":1,"ts":"2026-11-22T18:00:00Z","batt":80,"charging":false}',
            qos=qos,
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


SPARSE_GAP_S = 0.3


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def run_phase(
    devices: list[BenchDevice], n_alerts: int, n_hb: int, hb_counter: Any, n_sparse: int
) -> dict[str, float]:
    for d in devices:
        d.latency_ms.clear()
        d.receipts = 0
    # 1. Unloaded latency: one alert at a time.
    solo = devices[0]
    for _ in range(200):
        before = solo.receipts
        solo.alert()
        wait_until(lambda b=before: solo.receipts > b, 10, "solo receipt")
    solo_lat = list(solo.latency_ms)
    # 1b. Alerts apart, as in real use: each one after SPARSE_GAP_S of quiet (the server's
    # background work in between: checkpoints, presence flushes).
    sparse = devices[-1]
    sparse.latency_ms.clear()
    for _ in range(n_sparse):
        time.sleep(SPARSE_GAP_S)
        before = sparse.receipts
        sparse.alert()
        wait_until(lambda b=before: sparse.receipts > b, 10, "sparse receipt")
    sparse_lat = list(sparse.latency_ms)
    for d in devices:
        d.latency_ms.clear()
        d.receipts = 0
    # 2. Alert burst from every device at once.
    per = n_alerts // len(devices)
    t0 = time.perf_counter()
    for _ in range(per):
        for d in devices:
            d.alert()
    total = per * len(devices)
    wait_until(lambda: sum(d.receipts for d in devices) >= total, 300, "all receipts")
    alerts_s = total / (time.perf_counter() - t0)
    burst_lat = [x for d in devices for x in d.latency_ms]
    # 3. Heartbeats (QoS 1 so that the count is exact).
    start = hb_counter()
    t0 = time.perf_counter()
    per_hb = n_hb // len(devices)
    for _ in range(per_hb):
        for d in devices:
            d.heartbeat(1)
    # Polled every 250 ms: each poll is an HTTP request to the server under test, and polling
    # it every 20 ms measurably slowed the very thread being measured.
    deadline = time.monotonic() + 300
    while hb_counter() - start < per_hb * len(devices):
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for heartbeats")
        time.sleep(0.25)
    hb_s = per_hb * len(devices) / (time.perf_counter() - t0)
    return {
        "solo_p50_ms": pct(solo_lat, 50),
        "solo_p99_ms": pct(solo_lat, 99),
        "sparse_p50_ms": pct(sparse_lat, 50),
        "sparse_max_ms": max(sparse_lat, default=float("nan")),
        "alerts_per_s": alerts_s,
        "burst_p50_ms": pct(burst_lat, 50),
        "burst_p99_ms": pct(burst_lat, 99),
        "heartbeats_per_s": hb_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--alerts", type=int, default=2000)
    ap.add_argument("--heartbeats", type=int, default=20000)
    ap.add_argument(
        "--sparse", type=int, default=50, help=f"alerts sent {SPARSE_GAP_S} s apart, one by one"
    )
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vigie-bench-"))
    broker = LocalMosquitto(tmp / "broker").start()
    for i in range(args.devices):
        broker_files.set_password(broker.passwd_file, f"bench-{i:05d}", "bench-password")
    broker.reload()
    devices = [
        BenchDevice(f"bench-{i:05d}", "bench-password", broker.port) for i in range(args.devices)
    ]
    results: dict[str, dict[str, float]] = {}

    echo = MqttEcho("127.0.0.1", broker.server_port, SERVER_USERNAME, broker.server_password)
    results["bare paho echo (baseline)"] = run_phase(
        devices, args.alerts, args.heartbeats, lambda: echo.messages, args.sparse
    )
    echo.close()

    dbname = None
    if args.db == "sqlite":
        db_url = f"sqlite:///{tmp / 'vigie.db'}"
    else:
        dbname = f"vigie_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect("postgresql://127.0.0.1:5432/test", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        db_url = f"postgresql+psycopg://127.0.0.1:5432/{dbname}"
    server = ServerProcess(server_env(broker, db_url), tmp / "server.log").start()

    def hb_count() -> float:
        return server.metric("vigie_mqtt_messages_total", 'type="hb"')

    results[f"vigie server ({args.db})"] = run_phase(
        devices, args.alerts, args.heartbeats, hb_count, args.sparse
    )
    server.stop()
    for d in devices:
        d.close()
    broker.stop()
    if dbname:
        with psycopg.connect("postgresql://127.0.0.1:5432/test", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')

    print(
        f"\n{args.devices} devices, {args.alerts} alerts in a burst, "
        f"{args.heartbeats} heartbeats (QoS 1)"
    )
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        "| | solo p50 ms | solo p99 ms | sparse p50 / max ms | alerts/s | burst p50 ms "
        "| burst p99 ms | heartbeats/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['solo_p50_ms']:.2f} | {r['solo_p99_ms']:.2f} | "
            f"{r['sparse_p50_ms']:.2f} / {r['sparse_max_ms']:.2f} | "
            f"{r['alerts_per_s']:.0f} | {r['burst_p50_ms']:.1f} | {r['burst_p99_ms']:.1f} | "
            f"{r['heartbeats_per_s']:.0f} |"
        )
    info = machine_info()
    if args.db == "postgresql":
        info["postgresql"] = postgres_version("postgresql://127.0.0.1:5432/test")
    write_json(
        args.json,
        {
            "benchmark": "ingest",
            "machine": info,
            "config": {
                "devices": args.devices,
                "alerts": args.alerts,
                "heartbeats": args.heartbeats,
                "sparse": args.sparse,
                "sparse_gap_s": SPARSE_GAP_S,
                "db": args.db,
            },
            "baseline": results["bare paho echo (baseline)"],
            "vigie": results[f"vigie server ({args.db})"],
        },
    )


if __name__ == "__main__":
    main()
