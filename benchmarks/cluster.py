"""Scale-out benchmark: alerts/s and heartbeats/s with 1, 2 and 3 ``vigie server`` processes on
one PostgreSQL, on a 3-node RabbitMQ cluster (``VIGIE_INGEST=amqp``, one quorum queue) beside
one Mosquitto (``$share/vigie`` when there are several servers).

    uv run python benchmarks/cluster.py [--servers 1,2,3] [--devices 20] [--alerts 400]
                                        [--heartbeats 4000] [--brokers mosquitto,rabbitmq]
                                        [--json FILE]

Devices speak MQTT 3.1.1 (RabbitMQ 3.10 has no MQTT 5) at QoS 1; on RabbitMQ each device
connects to a node in turn. Alerts/s: every device publishes its share of ``--alerts``
distinct alerts as fast as the broker acknowledges them; the figure is alerts stored in the
database (one row each) per second, from the first publish to the last row. Heartbeats/s: the
same with heartbeats, counted by the servers (``vigie_mqtt_messages_total{type="hb"}``).
Servers, brokers and databases are the benchmark's own and stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.benchlib import machine_info, postgres_version, write_json
from tests.rabbit.cluster import RabbitCluster
from tests.rabbit.support import amqp_env
from tests.support import ServerProcess, server_env, wait_until
from vigie.brokers.mosquitto import LocalMosquitto

PG_ADMIN_DSN = os.environ.get("VIGIE_TEST_PG_DSN", "postgresql://127.0.0.1:5432/test")


def _pg_url(name: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}"


class Fleet:
    """``n`` MQTT 3.1.1 devices, each on the next port of ``ports``."""

    def __init__(self, ids: list[str], passwords: dict[str, str], ports: list[int]) -> None:
        self.clients: list[tuple[str, mqtt.Client]] = []
        for i, device_id in enumerate(ids):
            c = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311
            )
            c.username_pw_set(device_id, passwords[device_id])
            c.max_inflight_messages_set(50)
            ready = threading.Event()
            c.on_connect = lambda cl, u, f, rc, p, ready=ready: ready.set()
            c.connect("127.0.0.1", ports[i % len(ports)], keepalive=60)
            c.loop_start()
            if not ready.wait(30):
                raise RuntimeError(f"{device_id}: no CONNACK")
            self.clients.append((device_id, c))

    def publish(self, suffix: str, count: int) -> float:
        """``count`` messages spread over the devices, QoS 1; seconds until all PUBACKed."""
        t0 = time.perf_counter()
        infos = []
        per = max(1, count // len(self.clients))
        for device_id, c in self.clients:
            for _ in range(per):
                if suffix == "alert":
                    body = {"v": 1, "alert_id": str(uuid.uuid4()), "kind": "sos",
                            "ts": "2026-12-02T12:00:00Z"}  # fmt: skip
                else:
                    body = {"v": 1, "ts": "2026-12-02T12:00:00Z", "batt": 80}
                topic = f"vigie/v1/dev/{device_id}/{suffix}"
                infos.append(c.publish(topic, json.dumps(body), qos=1))
        for info in infos:
            info.wait_for_publish(120)
        return time.perf_counter() - t0

    def close(self) -> None:
        for _, c in self.clients:
            c.disconnect()
            c.loop_stop()


def _healthy(server: ServerProcess) -> Callable[[], bool]:
    return lambda: server.health()[0] == 200


def _alerts_in(db_url: str) -> int:
    dsn = db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM alert").fetchone()
        return int(row[0]) if row else 0


def _hb(servers: list[ServerProcess]) -> float:
    return sum(s.metric("vigie_mqtt_messages_total", 'type="hb"') for s in servers)


def measure(
    servers: list[ServerProcess], fleet: Fleet, db_url: str, alerts: int, heartbeats: int
) -> dict[str, Any]:
    n_alerts = max(1, alerts // len(fleet.clients)) * len(fleet.clients)
    before = _alerts_in(db_url)
    t0 = time.perf_counter()
    puback_s = fleet.publish("alert", n_alerts)
    wait_until(lambda: _alerts_in(db_url) - before >= n_alerts, 600, "alerts stored")
    alert_s = time.perf_counter() - t0
    n_hb = max(1, heartbeats // len(fleet.clients)) * len(fleet.clients)
    hb_before = _hb(servers)
    t0 = time.perf_counter()
    fleet.publish("hb", n_hb)
    wait_until(lambda: _hb(servers) - hb_before >= n_hb, 600, "heartbeats counted")
    hb_s = time.perf_counter() - t0
    return {
        "alerts": n_alerts,
        "alerts_per_s": n_alerts / alert_s,
        "alerts_puback_s": puback_s,
        "heartbeats": n_hb,
        "heartbeats_per_s": n_hb / hb_s,
    }


def run_broker(kind: str, counts: list[int], args: argparse.Namespace, work: Path) -> list[Any]:
    out: list[dict[str, Any]] = []
    ids = [f"bench-{i:03d}" for i in range(args.devices)]
    passwords = {d: uuid.uuid4().hex for d in ids}
    cluster: RabbitCluster | None = None
    broker: LocalMosquitto | None = None
    t = time.monotonic()
    if kind == "rabbitmq":
        cluster = RabbitCluster(work / "rabbit", size=3).start()
        from alert_server.devices.rabbitmq_accounts import RabbitAccounts

        acc = RabbitAccounts(cluster.api_url())
        for d, p in passwords.items():
            acc.add_device(d, p)
        acc.close()
        ports = [n.mqtt_port for n in cluster.nodes]
    else:
        from vigie.brokers import files as broker_files

        broker = LocalMosquitto(work / "mosquitto").start()
        for d, p in passwords.items():
            broker_files.set_password(broker.passwd_file, d, p)
        broker.reload()
        time.sleep(1)
        ports = [broker.port]
    print(f"{kind}: broker ready in {time.monotonic() - t:.0f} s", flush=True)
    try:
        for n in counts:
            name = f"vigie_bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            db_url = _pg_url(name)
            servers: list[ServerProcess] = []
            fleet: Fleet | None = None
            try:
                for i in range(n):
                    extra = {"VIGIE_MQTT_CLIENT_ID": f"vigie-server-{i}",
                             "VIGIE_PRESENCE_FLUSH_S": "1"}  # fmt: skip
                    if cluster is not None:
                        env = amqp_env(cluster, db_url, **extra)
                    else:
                        assert broker is not None
                        env = server_env(broker, db_url, **extra)
                        if n > 1:
                            env["VIGIE_MQTT_SHARED_GROUP"] = "vigie"
                    s = ServerProcess(env, work / f"{kind}-{n}-{i}.log")
                    servers.append(s)
                    # The first migrates alone.
                    s.start(wait_healthy=False)
                    wait_until(_healthy(s), 600, f"{kind} server {i}")
                fleet = Fleet(ids, passwords, ports)
                fig = measure(servers, fleet, db_url, args.alerts, args.heartbeats)
                fig.update(broker=kind, servers=n)
                print(
                    f"{kind}, {n} server(s): {fig['alerts_per_s']:.0f} alerts/s stored, "
                    f"{fig['heartbeats_per_s']:.0f} heartbeats/s",
                    flush=True,
                )
                out.append(fig)
            finally:
                if fleet is not None:
                    fleet.close()
                for s in servers:
                    s.stop()
                with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        if cluster is not None:
            cluster.stop()
        if broker is not None:
            broker.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--servers", default="1,2,3")
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--alerts", type=int, default=400)
    p.add_argument("--heartbeats", type=int, default=4000)
    p.add_argument("--brokers", default="mosquitto,rabbitmq")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    counts = [int(x) for x in args.servers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="vigie-bench-cluster-"))
    results: list[dict[str, Any]] = []
    try:
        for kind in args.brokers.split(","):
            results += run_broker(kind, counts, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_json(
        args.json,
        {
            "machine": machine_info(),
            "postgresql": postgres_version(PG_ADMIN_DSN),
            "devices": args.devices,
            "runs": results,
        },
    )


if __name__ == "__main__":
    main()
