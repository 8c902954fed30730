"""The only paho-mqtt user of the server: connect, (re)subscribe, hand off, ack in order.

Safety decisions:
- ``manual_ack``: the broker gets the PUBACK of a message only once the ingest writer has
  committed it. PUBACKs leave in arrival order (MQTT-4.6.0-2), through ``AckSequencer``.
- Persistent session: MQTT 5 ``clean_start=False`` with a Session Expiry Interval (3.1.1:
  ``clean_session=False``), so alerts published while the server is down wait in the broker.
- Subscriptions are (re)made in ``on_connect``; a refused connection is not "connected".
- ``TCP_NODELAY`` on the socket: without it a round trip costs ~40 ms of Nagle delay.
- On a shared subscription, presence and a last will, and the session of a server that died is
  taken over and drained by a survivor (``alert_server/ingest/rescue.py``, mosquitto#2662).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from alert_server.ingest.probe import SubscriptionProbe, probe_topic
from alert_server.ingest.rescue import (
    PRESENCE_FILTER,
    STOPPED,
    Presence,
    SessionRescue,
    presence_topic,
)
from vigie import topics
from vigie.brokers.address import BrokerAddress

log = logging.getLogger(__name__)


@functools.cache
def _expiry_properties(expiry_s: int) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = expiry_s
    return props


@dataclass(frozen=True)
class AckToken:
    generation: int
    mid: int
    qos: int
    # Which connection the message came on: 0 the server's own, >0 a rescue (rescue.py).
    conn: int = 0


class AckSequencer:
    """Sends PUBACKs in arrival order once each message is done.

    Message ids are only meaningful on the connection they arrived on: after a reconnect the
    broker re-sends every unacknowledged message, so pending acks of an older connection are
    dropped rather than sent on the new one.
    """

    def __init__(self, send_ack: Callable[[int, int], None], conn: int = 0) -> None:
        self._send_ack = send_ack
        self._conn = conn
        self._lock = threading.Lock()
        self._pending: deque[list[Any]] = deque()  # [token, done]
        self._generation = 0

    def new_connection(self) -> None:
        with self._lock:
            self._generation += 1
            self._pending.clear()

    def register(self, mid: int, qos: int) -> AckToken:
        with self._lock:
            token = AckToken(self._generation, mid, qos, self._conn)
            if qos > 0:
                self._pending.append([token, False])
            return token

    def done(self, token: AckToken) -> None:
        if token.qos == 0:
            return
        to_send: list[AckToken] = []
        with self._lock:
            if token.generation != self._generation:
                return
            for entry in self._pending:
                if entry[0] == token:
                    entry[1] = True
                    break
            while self._pending and self._pending[0][1]:
                to_send.append(self._pending.popleft()[0])
            # Sent under the lock so that two threads cannot reorder acks.
            for t in to_send:
                self._send_ack(t.mid, t.qos)

    def outstanding(self) -> int:
        with self._lock:
            return len(self._pending)


# Acknowledge one message to the broker (once its effect is durable); handed with it.
Ack = Callable[[], None]
# (topic, payload, retained, its ack): what a link hands over for each message it receives.
MessageHandler = Callable[[str, bytes, bool, Ack], None]


class LinkAcks:
    """``acks.done(token)`` for the ingest writer: to the connection the message came on."""

    def __init__(self, main: AckSequencer) -> None:
        self.main = main
        self.rescue: SessionRescue | None = None

    def done(self, token: AckToken) -> None:
        if token.conn == 0:
            self.main.done(token)
        elif self.rescue is not None:
            self.rescue.done(token)

    def outstanding(self) -> int:
        return self.main.outstanding()


class MqttLink:
    """The server's connection to the broker: built first (it can publish once connected),
    it receives from ``start(on_message)`` on, each message handed over with its ``Ack``."""

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        protocol: str = "5",
        session_expiry_s: int = 86_400,
        shared_group: str = "",
        on_connected: Callable[[bool], None] | None = None,
        receive_maximum: int = 100,
        rescue: bool = True,
    ) -> None:
        self.address = BrokerAddress.parse(url)
        self.v5 = protocol in ("5", "5.0", "v5")
        if not self.v5 and protocol not in ("3.1.1", "311", "v311"):
            raise ValueError(f"VIGIE_MQTT_PROTOCOL must be 5 or 3.1.1, got {protocol!r}")
        self.shared_group = shared_group
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self._handler: MessageHandler | None = None
        self._on_connected = on_connected
        self.connected = threading.Event()
        self.client_id = client_id
        # A message to itself through the same kind of subscription (operations.md 1.1).
        self._probe_topic = probe_topic(client_id)
        share = f"$share/{shared_group}/" if shared_group else ""
        self._probe_filter = f"{share}{self._probe_topic}"
        self.probe = SubscriptionProbe(f"MQTT {self._probe_filter}", clock=time.monotonic)
        if not shared_group:
            # A plain subscription is what every MQTT broker delivers: the probe is for
            # ``$share``, which some brokers accept and never deliver (RabbitMQ 3.x).
            self.probe.ok.set()
        if self.v5:
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=mqtt.MQTTv5,
                manual_ack=True,
            )
        else:
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=mqtt.MQTTv311,
                clean_session=False,
                manual_ack=True,
            )
        if self.address.username:
            client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            client.tls_set()
        client.max_inflight_messages_set(100)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_subscribe = self._on_subscribe
        self.client = client

        def send_ack(mid: int, qos: int) -> None:
            self.client.ack(mid, qos)

        self._acks = AckSequencer(send_ack)
        self.acks = LinkAcks(self._acks)
        # mosquitto#2662: only a shared subscription has other servers to take over from.
        self.rescue: SessionRescue | None = None
        if shared_group and rescue:
            self.rescue = SessionRescue(
                own_id=client_id,
                group=shared_group,
                address=self.address,
                v5=self.v5,
                session_expiry_s=session_expiry_s,
                receive_maximum=receive_maximum,
                handler=self._hand_over,
                sequencer=AckSequencer,
                publish_presence=self._publish_presence,
            )
            self.acks.rescue = self.rescue
            # Sent by the broker if this connection ends without a DISCONNECT (a SIGKILL, a
            # crash, a lost host): the survivors then take this session over.
            client.will_set(
                presence_topic(client_id),
                self.rescue.presence("offline").encode(),
                qos=1,
                retain=True,
            )

    def _hand_over(self, topic: str, payload: bytes, retain: bool, ack: Ack) -> None:
        """A message drained from a dead server's session: to the same handler as this
        connection's own (set by ``start``, before any presence can start a rescue)."""
        assert self._handler is not None
        self._handler(topic, payload, retain, ack)

    def _publish_presence(self, p: Presence) -> None:
        self.client.publish(presence_topic(p.client_id), p.encode(), qos=1, retain=True)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, on_message: MessageHandler) -> None:
        """Connect and receive: every message goes to ``on_message`` with its ``Ack``."""
        self._handler = on_message
        props = None
        clean_start: Any = mqtt.MQTT_CLEAN_START_FIRST_ONLY
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry_s
            props.ReceiveMaximum = self.receive_maximum
            # Never throw away the session (and the alerts queued in it) on start.
            clean_start = False
        self.client.connect_async(
            self.address.host,
            self.address.port,
            keepalive=30,
            clean_start=clean_start,
            properties=props,
        )
        self.client.loop_start()

    def stop(self) -> None:
        if self.rescue is not None:
            self.rescue.stop()
            if self.connected.is_set():
                # A clean stop: nothing held is left unacknowledged, nothing to take over.
                info = self.client.publish(
                    presence_topic(self.client_id),
                    self.rescue.presence(STOPPED).encode(),
                    qos=1,
                    retain=True,
                )
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()

    def wait_connected(self, timeout_s: float) -> bool:
        return self.connected.wait(timeout_s)

    # -- outgoing ------------------------------------------------------------------------
    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        *,
        expiry_s: int | None = None,
    ) -> None:
        props = None
        if expiry_s is not None and self.v5:
            # Message Expiry Interval: a device back after it is not told stale news. One
            # object per interval, made once (paho only reads it): making one cost more than
            # the rest of a receipt's publish.
            props = _expiry_properties(expiry_s)
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("publish on %s failed: rc=%s", topic, info.rc)

    # -- paho callbacks (paho's thread; they never block on slow work) --------------------
    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # TLS wrappers and unix sockets may refuse it; latency is then all that suffers.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            self.connected.clear()
            return
        self._acks.new_connection()
        client.subscribe(topics.subscriptions(self.shared_group))
        if self.shared_group:
            client.subscribe(self._probe_filter, qos=1)
            client.publish(self._probe_topic, self.probe.new_nonce(), qos=1)
        if self.rescue is not None:
            client.subscribe(PRESENCE_FILTER, qos=1)
            client.publish(
                presence_topic(self.client_id),
                self.rescue.presence("online").encode(),
                qos=1,
                retain=True,
            )
        log.info(
            "connected to broker %s:%s (session present: %s)",
            self.address.host,
            self.address.port,
            flags.session_present,
        )
        self.connected.set()
        if self._on_connected is not None:
            self._on_connected(True)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            # The broker's ACL does not grant what this server subscribes to (servers.acl
            # older than this release?): say so rather than wait for messages that never come.
            log.error("broker refused %d subscription(s) (mid %s): %s", len(refused), mid, refused)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self.connected.clear()
        log.warning("disconnected from broker: %s", reason_code)
        if self._on_connected is not None:
            self._on_connected(False)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        token = self._acks.register(msg.mid, msg.qos)
        if msg.topic == self._probe_topic:
            self.probe.arrived(bytes(msg.payload))
            self._acks.done(token)
            return
        if self.rescue is not None and msg.topic.startswith(PRESENCE_FILTER[:-1]):
            self.rescue.on_presence(bytes(msg.payload))
            self._acks.done(token)
            return
        try:
            assert self._handler is not None  # set by start(), before the loop runs
            self._handler(
                msg.topic, bytes(msg.payload), msg.retain, functools.partial(self.acks.done, token)
            )
        except Exception:
            # Never let one message stop the loop. The handler only decodes and hands off, so
            # this is a bug; the message is acked anyway because an unacked message would hold
            # back the PUBACK of every later one (they leave in order) and stall ingest.
            log.exception("ingest handler failed for %s", msg.topic)
            self._acks.done(token)
