"""The servers' listener admits server accounts only, and no device can take a server's MQTT
client id on either listener (a client id taken by another connection closes the first one and,
with a clean start, discards the alerts queued in its session). Real Mosquitto 2.0."""

from __future__ import annotations

import getpass
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support import Device, ServerProcess, add_device, alert_payload, vigie, wait_until
from vigie.brokers import files as broker_files
from vigie.brokers.mosquitto import BROKER_CONFIG_DIR, LocalMosquitto, free_port, wait_for_port
from vigie.topics import SERVER_USERNAME


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """The broker's rules do not depend on the database: SQLite only."""
    return f"sqlite:///{tmp_path / 'vigie.db'}"


class Client:
    """One MQTT connection, recording its CONNACK and whether the broker closed it."""

    def __init__(
        self,
        port: int,
        client_id: str,
        username: str,
        password: str,
        *,
        clean: bool = True,
        tls_ca: Path | None = None,
    ) -> None:
        self.rc: Any = None
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.username_pw_set(username, password)
        if tls_ca is not None:
            c.tls_set(ca_certs=str(tls_ca))
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a: self.disconnected.set()
        # A kick must show as a disconnection, not be hidden by a quick reconnect.
        c.reconnect_delay_set(30, 60)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0 if clean else 3600
        c.connect("127.0.0.1", port, keepalive=30, clean_start=clean, properties=props)
        c.loop_start()
        assert self.connected.wait(10), "no CONNACK"
        self.client = c

    def _on_connect(self, client: mqtt.Client, u: Any, flags: Any, rc: Any, p: Any) -> None:
        self.rc = rc
        self.connected.set()

    @property
    def refused(self) -> bool:
        return bool(self.rc is not None and self.rc.is_failure)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_device_account_is_refused_on_the_servers_listener(
    broker: LocalMosquitto, env: dict[str, str]
) -> None:
    password = add_device(env, "dev-srv")
    on_devices = Client(broker.port, "dev-srv", "dev-srv", password)
    assert not on_devices.refused  # the account is good...
    on_devices.close()
    on_servers = Client(broker.server_port, "dev-srv", "dev-srv", password)
    assert on_servers.refused  # ...but not on the servers' listener
    on_servers.close()


def test_server_account_is_refused_on_the_devices_listener(broker: LocalMosquitto) -> None:
    c = Client(broker.port, SERVER_USERNAME, SERVER_USERNAME, broker.server_password)
    assert c.refused
    c.close()


@pytest.mark.parametrize("listener", ["servers", "devices"])
def test_no_device_takes_a_servers_client_id(
    broker: LocalMosquitto, env: dict[str, str], listener: str
) -> None:
    # A second server (the account, a client id of its own) with a persistent session.
    other = Client(
        broker.server_port, "vigie-server-2", SERVER_USERNAME, broker.server_password, clean=False
    )
    assert not other.refused
    password = add_device(env, "dev-rogue")
    port = broker.server_port if listener == "servers" else broker.port
    rogue = Client(port, "vigie-server-2", "dev-rogue", password)
    # On the servers' listener it is refused; on the devices' listener it is admitted, but as
    # "dev-rogue" (use_username_as_clientid): either way the server keeps its connection.
    assert rogue.refused is (listener == "servers")
    assert not other.disconnected.wait(1.0), "the server's connection was taken over"
    rogue.close()
    other.close()


def test_the_real_server_keeps_its_session(
    broker: LocalMosquitto, env: dict[str, str], server: ServerProcess
) -> None:
    password = add_device(env, "dev-x")
    for port in (broker.server_port, broker.port):
        rogue = Client(port, "vigie-server", "dev-x", password)
        rogue.close()
    dev = Device("dev-x", password, broker.port)
    assert dev.connect()
    aid = str(uuid.uuid4())
    dev.publish("alert", alert_payload(aid))
    wait_until(lambda: bool(dev.received("alert.received", aid)), 10, "alert.received")
    dev.close()
    log = (broker.data_dir / "mosquitto.log").read_text(errors="replace")
    assert "Client vigie-server already connected" not in log


def test_server_names_are_reserved_for_servers(env: dict[str, str]) -> None:
    for name in ("vigie-server-2", "Vigie-Server-9"):
        out = vigie(
            env, "devices", "add", name, "--worker", "X", "--role", "nurse",
            "--phone", "+33612345678", "--pin", "1234", "--duress-pin", "9999",
        )  # fmt: skip
        assert out.returncode == 2, out.stdout
        assert "réservé aux serveurs" in out.stderr
        assert name not in broker_files.read_passwd(Path(env["VIGIE_BROKER_PASSWD_FILE"]))


def test_servers_acl_in_broker_config_is_the_generated_one() -> None:
    shipped = (BROKER_CONFIG_DIR / "servers.acl").read_text(encoding="utf-8")
    assert shipped == broker_files.render_servers_acl()


def _self_signed(tls: Path) -> None:
    tls.mkdir(parents=True)
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(tls / "broker.key"), "-out", str(tls / "broker.crt"),
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    shutil.copy(tls / "broker.crt", tls / "ca.crt")


def test_production_config_separates_the_listeners(tmp_path: Path) -> None:
    """broker_config/mosquitto.conf itself, on this machine's Mosquitto, moved to free ports and
    a scratch folder (never the standard ports)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is missing (apt-get install openssl)")
    etc = tmp_path / "etc"
    _self_signed(etc / "tls")
    device_port, server_port = free_port(), free_port()
    conf = (BROKER_CONFIG_DIR / "mosquitto.conf").read_text(encoding="utf-8")
    for old, new in (
        ("listener 8883\n", f"listener {device_port} 127.0.0.1\n"),
        ("listener 1883 127.0.0.1\n", f"listener {server_port} 127.0.0.1\n"),
        ("/run/mosquitto/mosquitto.pid", str(tmp_path / "mosquitto.pid")),
        ("/etc/mosquitto/vigie/", f"{etc}/"),
    ):
        assert old in conf, old
        conf = conf.replace(old, new)
    # What Debian's main mosquitto.conf provides around the drop-in.
    conf = (
        f"user {getpass.getuser()}\npersistence_location {tmp_path}/\n"
        f"log_dest file {tmp_path / 'mosquitto.log'}\n" + conf
    )
    (tmp_path / "vigie.conf").write_text(conf, encoding="utf-8")
    broker_files.write_passwd(etc / "passwd", {"dev-p": broker_files.mosquitto_hash("pw-dev")})
    broker_files.write_acl(etc / "acl", [])
    broker_files.write_passwd(
        etc / "servers.passwd", {SERVER_USERNAME: broker_files.mosquitto_hash("pw-srv")}
    )
    shutil.copy(BROKER_CONFIG_DIR / "servers.acl", etc / "servers.acl")
    exe = shutil.which("mosquitto")
    assert exe is not None
    proc = subprocess.Popen(
        [exe, "-c", str(tmp_path / "vigie.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        try:
            wait_for_port(device_port)
            wait_for_port(server_port)
        except OSError:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"mosquitto refused the config: {err.decode()}") from None
        ca = etc / "tls" / "ca.crt"
        cases = [
            (device_port, "dev-p", "pw-dev", ca, False),
            (device_port, SERVER_USERNAME, "pw-srv", ca, True),
            (server_port, SERVER_USERNAME, "pw-srv", None, False),
            (server_port, "dev-p", "pw-dev", None, True),
        ]
        for port, username, password, tls, refused in cases:
            c = Client(port, username, username, password, tls_ca=tls)
            assert c.refused is refused, (port == server_port, username)
            c.close()
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
