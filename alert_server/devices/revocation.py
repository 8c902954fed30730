"""Cut a revoked device off the broker at once, not at its next reconnect.

Mosquitto re-reads its files on SIGHUP but leaves connected clients alone. So a revocation:
1. removes the device from the password file and denies all its topics in the ACL, then
   reloads the broker (from now on it cannot log in, and every publish and delivery is
   refused);
2. connects once with the server's own account (``VIGIE_MQTT_URL``, the servers' listener)
   under the device's client id: client ids are one namespace for the whole broker, so the
   broker hands the id over to this new connection and closes the device's own (session
   takeover), and the clean start with no session expiry discards its queued messages.

(The device's own account cannot be used for this: device accounts are refused on the
servers' listener, the only one the server knows the address of.)
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from vigie.brokers import files as broker_files
from vigie.brokers.address import BrokerAddress

log = logging.getLogger(__name__)


def _take_over(address: BrokerAddress, device_id: str, timeout_s: float) -> bool:
    done = threading.Event()
    ok: list[bool] = []

    def on_connect(
        client: mqtt.Client, userdata: object, flags: object, rc: object, props: object
    ) -> None:
        ok.append(not getattr(rc, "is_failure", True))
        done.set()

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5
    )
    if address.username is not None:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set()
    client.on_connect = on_connect
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    try:
        client.connect(address.host, address.port, keepalive=10, clean_start=True, properties=props)
    except OSError as exc:
        log.warning("revocation: broker unreachable (%s); the ACL denial still applies", exc)
        return False
    client.loop_start()
    done.wait(timeout_s)
    client.disconnect()
    client.loop_stop()
    return bool(ok and ok[0])


def cut_off(
    *,
    device_id: str,
    passwd_file: Path,
    acl_file: Path,
    pid_file: Path | None,
    broker_url: str | None,
    timeout_s: float = 5.0,
) -> bool:
    """Revoke ``device_id`` on the broker. True when its live connection was also closed."""
    revoked = broker_files.read_revoked(acl_file)
    broker_files.write_acl(acl_file, [*revoked, device_id])
    broker_files.remove_user(passwd_file, device_id)
    reloaded = broker_files.reload_broker(pid_file)
    kicked = False
    if reloaded and broker_url:
        kicked = _take_over(BrokerAddress.parse(broker_url), device_id, timeout_s)
    return kicked
