"""The embedded broker (amqtt) of ``vigie demo``: loopback only, never anonymous, Vigie's ACL,
and the real server + a simulated device talking through it over MQTT 3.1.1."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from alert_server.devices import broker_files
from alert_server.embedded_broker import EmbeddedBroker, _levels_cover
from alert_server.ingest import topics
from device_sim.device import BrokerTarget, DeviceConfig, SimDevice
from device_sim.reactor import Reactor
from tests.device_sim.helpers import ServerAccount
from tests.support import SECRET_KEY, ServerProcess, add_device, wait_until


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    broker_files.write_passwd(passwd, {})
    broker_files.write_acl(acl, [])
    b = EmbeddedBroker(
        passwd_file=passwd, acl_file=acl, users={"nurse-a": "pw-a", "nurse-b": "pw-b"}
    ).start()
    try:
        yield b
    finally:
        b.stop()


def _connect(
    port: int, client_id: str, username: str | None, password: str | None
) -> tuple[mqtt.Client, Any]:
    done = threading.Event()
    box: dict[str, Any] = {}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if username is not None:
        c.username_pw_set(username, password)

    def on_connect(cl: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        box["rc"] = rc
        done.set()

    c.on_connect = on_connect
    c.on_disconnect = lambda *a: done.set()
    c.connect("127.0.0.1", port, keepalive=10)
    c.loop_start()
    assert done.wait(10), "no CONNACK"
    return c, box.get("rc")


def _close(c: mqtt.Client) -> None:
    c.disconnect()
    c.loop_stop()


def test_listens_on_loopback_only(embedded: EmbeddedBroker) -> None:
    assert embedded.bound_addresses() == [("127.0.0.1", embedded.port)]
    assert embedded.host == "127.0.0.1"
    if os.path.exists("/proc/net/tcp"):
        # Every listening socket on this port: local address 0100007F (127.0.0.1), none on
        # 00000000 (0.0.0.0).
        port_hex = f"{embedded.port:04X}"
        listening = []
        for path in ("/proc/net/tcp", "/proc/net/tcp6"):
            if os.path.exists(path):
                for line in Path(path).read_text().splitlines()[1:]:
                    local, state = line.split()[1], line.split()[3]
                    if local.endswith(":" + port_hex) and state == "0A":
                        listening.append(local)
        assert listening == [f"0100007F:{port_hex}"]


@pytest.mark.parametrize(
    ("client_id", "username", "password"),
    [
        ("anon", None, None),  # anonymous
        ("nurse-a", "nurse-a", "wrong"),  # bad password
        ("someone-else", "nurse-a", "pw-a"),  # client id ≠ username
        ("ghost", "ghost", "pw"),  # unknown account
    ],
)
def test_refused(
    embedded: EmbeddedBroker, client_id: str, username: str | None, password: str | None
) -> None:
    c, rc = _connect(embedded.port, client_id, username, password)
    assert rc is not None and rc.is_failure
    _close(c)


def test_device_and_server_account_exchange_messages_within_the_acl(
    embedded: EmbeddedBroker,
) -> None:
    server = ServerAccount(embedded.server_url(), "vigie-test", protocol="3.1.1")
    dev, rc = _connect(embedded.port, "nurse-a", "nurse-a", "pw-a")
    assert not rc.is_failure
    got: list[tuple[str, bytes]] = []
    subacks: list[list[Any]] = []
    dev.on_message = lambda cl, u, m: got.append((m.topic, m.payload))
    dev.on_subscribe = lambda cl, u, mid, rcs, p: subacks.append(list(rcs))
    dev.subscribe(topics.cmd("nurse-a"), 1)
    dev.subscribe(topics.cmd("nurse-b"), 1)  # another device's commands: refused
    dev.subscribe(f"{topics.PREFIX}/+/cmd", 1)  # a wildcard over everyone's: refused
    wait_until(lambda: len(subacks) == 3, 5, "three SUBACKs")
    assert [rc[0].is_failure for rc in subacks] == [False, True, True]
    # Uplink: the device may write only its own topics.
    dev.publish(topics.uplink("nurse-b", "alert"), b'{"v":1,"spoof":true}', qos=1)
    dev.publish(topics.uplink("nurse-a", "alert"), b'{"v":1,"alert_id":"x"}', qos=1)
    wait_until(lambda: server.uplinks("nurse-a", "alert"), 5, "own alert delivered")
    # Same connection, published before: had it been let through it would be here by now.
    assert server.uplinks("nurse-b", "alert") == []
    # Downlink: the server account writes a command, only its device receives it.
    server.command("nurse-a", "alert.received", alert_id="x")
    wait_until(lambda: got, 5, "command delivered")
    assert got[0][0] == topics.cmd("nurse-a")
    _close(dev)
    server.close()


def test_device_added_to_the_password_file_is_accepted_without_restart(
    embedded: EmbeddedBroker,
) -> None:
    assert embedded.passwd_file is not None
    c, rc = _connect(embedded.port, "nurse-new", "nurse-new", "pw-new")
    assert rc.is_failure
    _close(c)
    broker_files.set_password(embedded.passwd_file, "nurse-new", "pw-new")
    c, rc = _connect(embedded.port, "nurse-new", "nurse-new", "pw-new")
    assert not rc.is_failure
    _close(c)


def test_vigie_server_and_simulated_device_over_mqtt_311(tmp_path: Path) -> None:
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    broker_files.write_passwd(passwd, {})
    broker_files.write_acl(acl, [])
    broker = EmbeddedBroker(passwd_file=passwd, acl_file=acl).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
    env.update(
        VIGIE_TELEPHONY="simulated",
        VIGIE_SECRET_KEY=SECRET_KEY,
        VIGIE_DATABASE_URL=f"sqlite:///{tmp_path / 'vigie.db'}",
        VIGIE_MQTT_URL=broker.server_url(),
        VIGIE_MQTT_PROTOCOL="3.1.1",
        VIGIE_BROKER_PASSWD_FILE=str(passwd),
        VIGIE_BROKER_ACL_FILE=str(acl),
        VIGIE_PRESENCE_FLUSH_S="0.2",
    )
    server = ServerProcess(env, tmp_path / "server.log")
    reactor = Reactor(1).start()
    try:
        server.start()
        password = add_device(env, "nurse-demo")  # written to the file the broker reads
        dev = SimDevice(
            "nurse-demo",
            password,
            role="nurse",
            mobility=None,
            shard=reactor.pick(),
            broker=BrokerTarget(port=broker.port, protocol="3.1.1"),
            config=DeviceConfig(hb_interval_s=3600),
        )
        dev.start()
        assert dev.ready.wait(10), dev.last_connect_error
        alert_id = dev.press()
        wait_until(lambda: dev.alerts[alert_id].state == "received", 15, "alert.received")
        dev.cancel(alert_id, "1234")
        wait_until(lambda: bool(dev.commands("alert.cancelled", alert_id)), 10, "cancelled")
        dev.stop()
    finally:
        reactor.stop()
        server.stop()
        broker.stop()


def test_topic_cover_rules() -> None:
    assert _levels_cover("a/+/c", "a/b/c")
    assert _levels_cover("a/+/c", "a/+/c")
    assert not _levels_cover("a/b/c", "a/+/c")
    assert not _levels_cover("a/+/c", "a/#")
    assert _levels_cover("$SYS/#", "$SYS/broker/load")
    assert not _levels_cover("a/b", "a/b/c")
    assert not _levels_cover("a/b/c", "a/b")
