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

from device_sim.device import BrokerTarget, DeviceConfig, SimDevice
from device_sim.reactor import Reactor
from tests.device_sim.helpers import ServerAccount
from tests.support import SECRET_KEY, ServerProcess, add_device, wait_until
from vigie import topics
from vigie.brokers import files as broker_files
from vigie.brokers.embedded import EmbeddedBroker, _levels_cover


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
    assert embedded.server_port != embedded.port
    assert embedded.bound_addresses() == [
        ("127.0.0.1", embedded.port),
        ("127.0.0.1", embedded.server_port),
    ]
    assert embedded.host == "127.0.0.1"
    if os.path.exists("/proc/net/tcp"):
        # Every listening socket on these ports: local address 0100007F (127.0.0.1), none on
        # 00000000 (0.0.0.0).
        for port in (embedded.port, embedded.server_port):
            port_hex = f"{port:04X}"
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


def test_each_listener_admits_only_its_own_accounts(embedded: EmbeddedBroker) -> None:
    # A device account on the servers' port, even with its own client id and password.
    c, rc = _connect(embedded.server_port, "nurse-a", "nurse-a", "pw-a")
    assert rc is not None and rc.is_failure
    _close(c)
    # The server account on the devices' port.
    c, rc = _connect(embedded.port, "vigie-test", topics.SERVER_USERNAME, embedded.server_password)
    assert rc is not None and rc.is_failure
    _close(c)
    # Each on its own: admitted.
    c, rc = _connect(embedded.port, "nurse-a", "nurse-a", "pw-a")
    assert not rc.is_failure
    _close(c)
    c, rc = _connect(
        embedded.server_port, "vigie-test", topics.SERVER_USERNAME, embedded.server_password
    )
    assert not rc.is_failure
    _close(c)


def _server_session(embedded: EmbeddedBroker, client_id: str) -> tuple[mqtt.Client, Any]:
    """The server account with a persistent session subscribed to every alert."""
    box: dict[str, Any] = {"alerts": [], "disconnected": threading.Event()}
    ready = threading.Event()
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=False,
    )
    c.username_pw_set(topics.SERVER_USERNAME, embedded.server_password)
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(f"{topics.PREFIX}/+/alert", 1)
    c.on_subscribe = lambda *a: ready.set()
    c.on_message = lambda cl, u, m: box["alerts"].append(m.payload)
    c.on_disconnect = lambda *a: box["disconnected"].set()
    c.reconnect_delay_set(30, 60)  # a kick must show, not be papered over by a reconnect
    c.connect("127.0.0.1", embedded.server_port, keepalive=30)
    c.loop_start()
    assert ready.wait(10)
    return c, box


@pytest.mark.parametrize(
    ("listener", "username", "password"),
    [
        ("devices", "nurse-a", "pw-a"),  # a device account, on its own listener
        ("servers", "nurse-a", "pw-a"),  # a device account, on the servers' listener
        ("devices", topics.SERVER_USERNAME, "guess"),  # the server's name, a wrong password
        ("servers", topics.SERVER_USERNAME, "guess"),
    ],
)
def test_nobody_else_takes_the_servers_client_id(
    embedded: EmbeddedBroker, listener: str, username: str, password: str
) -> None:
    server, box = _server_session(embedded, "vigie-server-1")
    port = embedded.port if listener == "devices" else embedded.server_port
    rogue, rc = _connect(port, "vigie-server-1", username, password)
    assert rc is not None and rc.is_failure
    _close(rogue)
    # Still connected, and its session (subscriptions) intact: an alert still reaches it.
    dev, rc = _connect(embedded.port, "nurse-b", "nurse-b", "pw-b")
    assert not rc.is_failure
    dev.publish(topics.uplink("nurse-b", "alert"), b'{"v":1}', qos=1).wait_for_publish(5)
    wait_until(lambda: bool(box["alerts"]), 5, "the alert, through the server's session")
    assert not box["disconnected"].is_set(), "the server was disconnected"
    _close(dev)
    _close(server)


def test_a_refused_clean_connect_does_not_discard_the_servers_queued_alerts(
    embedded: EmbeddedBroker,
) -> None:
    server, box = _server_session(embedded, "vigie-server-1")
    _close(server)  # the server is away; its session keeps what arrives
    dev, rc = _connect(embedded.port, "nurse-a", "nurse-a", "pw-a")
    assert not rc.is_failure
    dev.publish(
        topics.uplink("nurse-a", "alert"), b'{"v":1,"alert_id":"queued"}', qos=1
    ).wait_for_publish(5)  # PUBACK: the broker holds it for the server's session
    # amqtt 0.12.1 deleted the session named by a clean CONNECT before authenticating it.
    rogue, rc = _connect(embedded.port, "vigie-server-1", topics.SERVER_USERNAME, "guess")
    assert rc.is_failure
    _close(rogue)
    server, box = _server_session(embedded, "vigie-server-1")
    wait_until(lambda: bool(box["alerts"]), 5, "the alert queued while the server was away")
    _close(server)
    _close(dev)


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
