"""The broker lets each device speak only for itself (broker_config ACL, real Mosquitto)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.support import Device, ServerProcess, add_device, alert_payload, vigie, wait_until
from vigie.brokers.mosquitto import LocalMosquitto
from vigie.topics import SERVER_USERNAME


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """The broker's rules do not depend on the database: SQLite only."""
    return f"sqlite:///{tmp_path / 'vigie.db'}"


class Spy:
    """The server account, subscribed to every uplink: sees what the broker lets through."""

    def __init__(self, broker: LocalMosquitto) -> None:
        self.seen: list[str] = []
        self._ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="spy", protocol=mqtt.MQTTv5)
        c.username_pw_set(SERVER_USERNAME, broker.server_password)
        c.on_connect = lambda cl, *a: cl.subscribe("vigie/v1/dev/#", qos=1)
        c.on_subscribe = lambda *a: self._ready.set()
        c.on_message = lambda cl, u, m: self.seen.append(m.topic)
        c.connect("127.0.0.1", broker.server_port)
        c.loop_start()
        assert self._ready.wait(5)
        self.client = c

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_device_cannot_publish_as_another_nor_read_its_commands(
    broker: LocalMosquitto, env: dict[str, str]
) -> None:
    a = Device("dev-a", add_device(env, "dev-a"), broker.port)
    b = Device("dev-b", add_device(env, "dev-b"), broker.port)
    assert a.connect() and b.connect()
    spy = Spy(broker)
    # A subscribes to B's command topic too (SUBSCRIBE is not ACL-checked in 2.0, delivery is).
    assert a.client is not None
    stolen: list[Any] = []
    a.client.message_callback_add("vigie/v1/dev/dev-b/cmd", lambda c, u, m: stolen.append(m))
    a.client.subscribe("vigie/v1/dev/dev-b/cmd", qos=1)
    time.sleep(0.2)
    a.publish_raw_topic("vigie/v1/dev/dev-b/alert", json.dumps(alert_payload()))
    a.publish("alert", alert_payload())  # its own topic: allowed
    wait_until(lambda: "vigie/v1/dev/dev-a/alert" in spy.seen, 5, "A's own alert")
    time.sleep(0.3)
    assert "vigie/v1/dev/dev-b/alert" not in spy.seen
    # The server writes to B's command topic: B gets it, A does not.
    spy.client.publish("vigie/v1/dev/dev-b/cmd", b'{"v":1,"type":"locate"}', qos=1)
    wait_until(lambda: bool(b.received("locate")), 5, "B's command")
    time.sleep(0.3)
    assert stolen == []
    # A device cannot write commands either.
    a.publish_raw_topic("vigie/v1/dev/dev-a/cmd", b'{"v":1,"type":"alert.acknowledged"}')
    time.sleep(0.3)
    assert "vigie/v1/dev/dev-a/cmd" not in spy.seen
    spy.close()
    a.close()
    b.close()


def test_wrong_password_refused(broker: LocalMosquitto, env: dict[str, str]) -> None:
    add_device(env, "dev-pw")
    d = Device("dev-pw", "not-the-password", broker.port)
    assert not d.connect(timeout_s=3)
    assert d.connect_rc is not None and d.connect_rc.is_failure
    d.close()


def test_device_cannot_use_the_server_listener_without_its_password(
    broker: LocalMosquitto, env: dict[str, str]
) -> None:
    d = Device(SERVER_USERNAME, "guess", broker.port)
    assert not d.connect(timeout_s=3)
    d.close()


def test_revoked_device_is_cut_off_at_once_and_refused_after(
    broker: LocalMosquitto, env: dict[str, str], server: ServerProcess
) -> None:
    password = add_device(env, "dev-rev")
    d = Device("dev-rev", password, broker.port)
    assert d.connect()
    spy = Spy(broker)
    out = vigie(env, "devices", "revoke", "dev-rev")
    assert out.returncode == 0, out.stderr
    assert "connexion en cours a été fermée" in out.stdout
    # Its live connection is closed by the broker...
    wait_until(d.disconnected.is_set, 5, "revoked device disconnected")
    d.close()
    # ...and it cannot come back.
    again = Device("dev-rev", password, broker.port)
    assert not again.connect(timeout_s=3)
    again.close()
    time.sleep(0.3)
    assert not [t for t in spy.seen if t.startswith("vigie/v1/dev/dev-rev/")]
    spy.close()
    # The device list shows it revoked.
    listed = json.loads(vigie(env, "devices", "list", "--json").stdout)
    assert [r["state"] for r in listed if r["device_id"] == "dev-rev"] == ["revoked"]


def test_unique_device_ids_cannot_take_over_each_other(
    broker: LocalMosquitto, env: dict[str, str]
) -> None:
    # use_username_as_clientid: B connecting with client id "dev-c" still becomes "dev-b",
    # so it cannot kick dev-c off.
    c = Device("dev-c", add_device(env, "dev-c"), broker.port)
    assert c.connect()
    pw_b = add_device(env, "dev-b2")
    rogue = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dev-c", protocol=mqtt.MQTTv5)
    rogue.username_pw_set("dev-b2", pw_b)
    rogue.connect("127.0.0.1", broker.port)
    rogue.loop_start()
    time.sleep(0.5)
    assert not c.disconnected.is_set()
    rogue.disconnect()
    rogue.loop_stop()
    c.close()
