"""``VIGIE_INGEST=amqp`` on a real RabbitMQ (the test's own node): devices speak MQTT to the
MQTT plugin, the server consumes the quorum queue, acknowledges after commit and answers
through ``amq.topic``; device accounts and topic permissions come from ``vigie devices``; the
subscription probe catches RabbitMQ's silent ``$share``."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from sqlalchemy import func, select

from alert_server.alerts.models import Alert
from alert_server.db import make_engine
from tests.rabbit.cluster import ADMIN_USER, RabbitCluster
from tests.rabbit.support import Device311, amqp_env
from tests.support import ServerProcess, add_device, alert_payload, vigie, wait_until


def _stored(db_url: str, alert_id: str) -> int:
    table = Alert.__table__  # type: ignore[attr-defined]
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(table).where(table.c.alert_id == alert_id)
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_amqp_ingest_stores_once_and_answers_through_amq_topic(
    rabbit1: RabbitCluster, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'vigie.db'}"
    env = amqp_env(rabbit1, db_url, VIGIE_MQTT_CLIENT_ID="vigie-server-a")
    password = add_device(env, "rq-dev-1")
    server = ServerProcess(env, tmp_path / "server.log").start()
    device = Device311("rq-dev-1", password, rabbit1.nodes[0].mqtt_port)
    try:
        assert device.connect(clean=False)
        status, body = server.health()
        assert status == 200 and body["subscription"] is True
        # The queue of operations.md 1.1: quorum, single active consumer, bound on amq.topic.
        q = rabbit1.api("GET", "/queues/%2F/vigie.uplink")
        assert q["type"] == "quorum" and q["arguments"]["x-single-active-consumer"] is True
        bindings = rabbit1.api("GET", "/queues/%2F/vigie.uplink/bindings")
        assert {"amq.topic", "vigie.v1.dev.*.*"} <= {
            b["source"] or b["routing_key"] for b in bindings
        } | {b["routing_key"] for b in bindings}
        alert_id = str(uuid.uuid4())
        for _ in range(3):  # the device repeats its alert: one row
            device.publish("alert", alert_payload(alert_id))
        wait_until(lambda: bool(device.received("alert.received", alert_id)), 60, "alert.received")
        wait_until(lambda: _stored(db_url, alert_id) == 1, 30, "alert stored")
        # Every message acknowledged after its commit: nothing left unacknowledged.
        wait_until(
            lambda: rabbit1.api("GET", "/queues/%2F/vigie.uplink").get("messages", 1) == 0,
            60,
            "queue drained",
        )
        assert _stored(db_url, alert_id) == 1
    finally:
        device.close()
        server.stop()


def test_device_accounts_and_topic_permissions_on_rabbitmq(
    rabbit1: RabbitCluster, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'vigie.db'}"
    env = amqp_env(rabbit1, db_url)
    pw_a = add_device(env, "rq-perm-a")
    add_device(env, "rq-perm-b")
    held = rabbit1.api("GET", "/users/rq-perm-a/topic-permissions")
    assert held[0]["write"].startswith(r"^vigie\.v1\.dev\.{username}\.")
    assert held[0]["read"] == r"^vigie\.v1\.dev\.{username}\.cmd$"
    port = rabbit1.nodes[0].mqtt_port
    # A wrong password is refused.
    assert not Device311("rq-perm-a", "wrong", port).connect(timeout_s=15)
    # Its own topics: allowed. Another device's topic: the broker closes the connection.
    a = Device311("rq-perm-a", pw_a, port)
    try:
        assert a.connect()
        a.publish("hb", {"v": 1, "ts": "2026-12-02T12:00:00Z", "batt": 80})
        assert not a.disconnected.is_set()
        a.publish_raw_topic("vigie/v1/dev/rq-perm-b/alert", b'{"v":1}')
        wait_until(a.disconnected.is_set, 30, "connection closed for another device's topic")
    finally:
        a.close()
    # Revoked: the user is gone and an open connection is closed.
    a = Device311("rq-perm-a", pw_a, port)
    try:
        assert a.connect()
        a.disconnected.clear()
        out = vigie(env, "devices", "revoke", "rq-perm-a")
        assert out.returncode == 0, out.stderr
        assert "fermée" in out.stdout
        wait_until(a.disconnected.is_set, 30, "revoked device disconnected")
        r = httpx.get(
            f"http://127.0.0.1:{rabbit1.nodes[0].http_port}/api/users/rq-perm-a",
            auth=(ADMIN_USER, rabbit1.admin_password),
        )
        assert r.status_code == 404
    finally:
        a.close()
    assert not Device311("rq-perm-a", pw_a, port).connect(timeout_s=15)


def test_probe_refuses_healthy_on_rabbitmq_shared_subscription(
    rabbit1: RabbitCluster, tmp_path: Path
) -> None:
    """RabbitMQ 3.10 grants a ``$share/…`` subscription and delivers nothing: /healthz 503."""
    db_url = f"sqlite:///{tmp_path / 'vigie.db'}"
    mqtt_url = (
        f"mqtt://{ADMIN_USER}:{rabbit1.admin_password}@127.0.0.1:{rabbit1.nodes[0].mqtt_port}"
    )
    base = amqp_env(rabbit1, db_url, VIGIE_INGEST="mqtt", VIGIE_MQTT_URL=mqtt_url)
    base.update(VIGIE_MQTT_PROTOCOL="3.1.1")
    shared = ServerProcess(
        {
            **base,
            "VIGIE_MQTT_SHARED_GROUP": "vigie",
            "VIGIE_MQTT_CLIENT_ID": "vigie-server-s",
            # Its own database: two servers migrating one new SQLite file at once would race.
            "VIGIE_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
        },
        tmp_path / "shared.log",
    ).start(wait_healthy=False)
    plain = ServerProcess(
        {**base, "VIGIE_MQTT_CLIENT_ID": "vigie-server-p"}, tmp_path / "plain.log"
    ).start(wait_healthy=False)
    try:
        # The same broker without $share is healthy.
        wait_until(lambda: plain.health()[0] == 200, 180, "plain server healthy")
        wait_until(lambda: "ne le livre pas" in shared.log(), 180, "probe failure logged")
        status, body = shared.health()
        assert status == 503
        assert body["broker"] is True and body["subscription"] is False
    finally:
        shared.stop()
        plain.stop()
