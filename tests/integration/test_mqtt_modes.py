"""MQTT 3.1.1 brokers, and several servers splitting the load with a shared subscription."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlmodel import Session, select

from alert_server.alerts.models import Alert
from alert_server.db import make_engine
from tests.support import Device, ServerProcess, add_device, alert_payload, wait_until
from vigie.brokers.mosquitto import LocalMosquitto


def _alert_ids(db_url: str) -> list[str]:
    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            return list(s.exec(select(Alert.alert_id)))
    finally:
        engine.dispose()


def test_mqtt_311_persistent_session_keeps_alerts_across_a_restart(
    broker: LocalMosquitto, env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    env = dict(env, VIGIE_MQTT_PROTOCOL="3.1.1")
    dev = Device("nurse-311", add_device(env, "nurse-311"), broker.port)
    assert dev.connect()
    server = ServerProcess(env, tmp_path / "server.log").start()
    first = str(uuid.uuid4())
    dev.publish("alert", alert_payload(first))
    wait_until(lambda: bool(dev.received("alert.received", first)), 10, "first receipt")
    server.kill()
    second = str(uuid.uuid4())
    dev.publish("alert", alert_payload(second))
    server.start()
    wait_until(lambda: bool(dev.received("alert.received", second)), 20, "second receipt")
    assert sorted(_alert_ids(db_url)) == sorted([first, second])
    server.stop()
    dev.close()


def test_two_servers_with_a_shared_subscription_store_each_alert_once(
    broker: LocalMosquitto, env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    servers = [
        ServerProcess(
            dict(env, VIGIE_MQTT_SHARED_GROUP="vigie", VIGIE_MQTT_CLIENT_ID=f"vigie-server-{i}"),
            tmp_path / f"server{i}.log",
        ).start()
        for i in (1, 2)
    ]
    dev = Device("nurse-shared", add_device(env, "nurse-shared"), broker.port)
    assert dev.connect()
    sent = [str(uuid.uuid4()) for _ in range(40)]
    for aid in sent:
        dev.publish("alert", alert_payload(aid))
    # Repeats of the same alerts, which the broker may route to the other server.
    for aid in sent[:10]:
        dev.publish("alert", alert_payload(aid))
    wait_until(lambda: len(_alert_ids(db_url)) == 40, 20, "40 alerts")
    for aid in sent:
        wait_until(lambda a=aid: bool(dev.received("alert.received", a)), 10, "receipt")
    assert sorted(_alert_ids(db_url)) == sorted(sent)
    # Both servers took part.
    stored = [s.metric("vigie_alerts_stored_total") for s in servers]
    assert sum(stored) == 40 and min(stored) > 0, stored
    for s in servers:
        s.stop()
    dev.close()
