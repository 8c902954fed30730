"""``VIGIE_INGEST=amqp``: the only AMQP (pika) user of the server, a drop-in for ``MqttLink``.

Devices keep speaking MQTT, to RabbitMQ's MQTT plugin, which publishes their messages on
``amq.topic`` (``/`` in a topic becomes ``.`` in the routing key). Every server consumes them from
one replicated queue (``VIGIE_AMQP_QUEUE``, type quorum, bound for ``vigie.v1.dev.*.*``) and
hands each one to the same ``Ingestor`` as on the MQTT path: the use case is unchanged, only the
transport differs.

Safety decisions:
- Manual acknowledgements: a message is acknowledged once the ingest writer has committed it
  (the same ``ack`` hook as the PUBACK). A server that dies holding unacknowledged messages
  loses them to the next consumer (the broker requeues them at once, measured 0.01 s), never to
  nobody: no persistent session stays behind in a round robin (mosquitto#2662 does not exist
  here).
- Order per device: the queue has ``x-single-active-consumer``. One server at a time consumes
  it, in queue order, through its one writer thread; the others wait as hot standbys and the
  broker hands the queue to one of them when the active one goes away. A round robin over
  several consumers would let two servers commit two messages of one device in either order
  (a session "end" before its "start", a cancel before its alert); the consistent-hash
  exchange would keep the order but ties each device's share to a queue of its own, stranded
  when its server dies. Ingest is one commit per batch of up to 200 messages; the servers still
  share dispatch, the console and the timers through the database.
- Several nodes in ``VIGIE_AMQP_URL`` (comma-separated): the connection moves to the next one
  when its node dies; delivery tags of a dead connection are never acknowledged on a new one.
- The routing key ``vigie.v1.dev.*.*`` also matches the downlinks (``….cmd``) that the servers
  publish on ``amq.topic``: they are acknowledged and dropped here, never given to ingest.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from alert_server.ingest.mqtt import AckToken, MessageHandler
from alert_server.ingest.probe import SubscriptionProbe, probe_topic

log = logging.getLogger(__name__)
# pika logs every connection step at INFO; its warnings and errors are enough.
logging.getLogger("pika").setLevel(logging.WARNING)

EXCHANGE = "amq.topic"
UPLINK_BINDING = "vigie.v1.dev.*.*"
DEFAULT_QUEUE = "vigie.uplink"
QUEUE_ARGUMENTS: dict[str, Any] = {
    "x-queue-type": "quorum",
    "x-single-active-consumer": True,
}
_SWAP = str.maketrans("./", "/.")


def routing_key(topic: str) -> str:
    """The AMQP routing key RabbitMQ's MQTT plugin uses for an MQTT topic (and back)."""
    return topic.translate(_SWAP)


topic_of = routing_key  # the mapping is its own inverse


def parse_urls(urls: str) -> list[pika.URLParameters]:
    found = [u.strip() for u in urls.split(",") if u.strip()]
    if not found:
        raise ValueError("VIGIE_AMQP_URL est vide (VIGIE_INGEST=amqp)")
    params = []
    for url in found:
        scheme = urlsplit(url).scheme
        if scheme not in ("amqp", "amqps"):
            raise ValueError(f"VIGIE_AMQP_URL : schéma amqp:// ou amqps:// attendu, pas {scheme!r}")
        p = pika.URLParameters(url)
        p.heartbeat = 10
        p.blocked_connection_timeout = 30
        p.connection_attempts = 1
        p.socket_timeout = 5
        params.append(p)
    return params


def describe(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5672}{unquote(parts.path) or '/'}"


class _Acks:
    """``acks.done(token)`` as on ``MqttLink``: the ack is run on the connection's thread."""

    def __init__(self, link: AmqpLink) -> None:
        self._link = link
        self._lock = threading.Lock()
        self._outstanding = 0

    def register(self) -> None:
        with self._lock:
            self._outstanding += 1

    def reset(self) -> None:
        with self._lock:
            self._outstanding = 0

    def done(self, token: AckToken) -> None:
        with self._lock:
            self._outstanding = max(0, self._outstanding - 1)
        self._link._ack(token)

    def outstanding(self) -> int:
        with self._lock:
            return self._outstanding


class AmqpLink:
    """The server's connection to a RabbitMQ cluster (same surface as ``MqttLink``)."""

    def __init__(
        self,
        urls: str,
        *,
        client_id: str,
        queue: str = DEFAULT_QUEUE,
        on_connected: Callable[[bool], None] | None = None,
        prefetch: int = 200,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.params = parse_urls(urls)
        self.urls = [u.strip() for u in urls.split(",") if u.strip()]
        self.client_id = client_id
        self.queue = queue
        self.prefetch = prefetch
        self._handler: MessageHandler | None = None
        self._on_connected = on_connected
        self.connected = threading.Event()
        self.acks = _Acks(self)
        self.probe = SubscriptionProbe(f"AMQP {EXCHANGE} → {probe_topic(client_id)}", clock=clock)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._generation = 0
        self._next = 0
        self._probe_queue: str | None = None
        self.node: str | None = None  # the node this server is connected to, for the logs

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, on_message: MessageHandler) -> None:
        """Connect and consume: every delivery goes to ``on_message`` with its ``Ack``."""
        self._handler = on_message
        self._thread = threading.Thread(target=self._run, name="vigie-amqp", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.connected.clear()

    def wait_connected(self, timeout_s: float) -> bool:
        return self.connected.wait(timeout_s)

    # -- outgoing (any thread) -------------------------------------------------------------
    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        *,
        expiry_s: int | None = None,
    ) -> None:
        conn, channel = self._conn, self._channel
        if conn is None or channel is None or not self.connected.is_set():
            log.warning("publish on %s dropped: not connected to RabbitMQ", topic)
            return
        props = pika.BasicProperties(
            # Persistent: kept by the device's durable MQTT subscription queue across a restart
            # (the MQTT plugin delivers at the subscription's QoS).
            delivery_mode=2 if qos > 0 else 1,
            expiration=str(expiry_s * 1000) if expiry_s is not None else None,
        )
        key = routing_key(topic)

        def send() -> None:
            if channel.is_open:
                channel.basic_publish(EXCHANGE, key, payload, props)

        try:
            conn.add_callback_threadsafe(send)
        except Exception as exc:  # the connection closed meanwhile: as paho's "no connection"
            log.warning("publish on %s failed: %s", topic, exc)

    def _ack(self, token: AckToken) -> None:
        conn, channel, generation = self._conn, self._channel, self._generation
        if conn is None or channel is None or token.generation != generation:
            return  # a delivery of a dead connection: the broker has requeued it already

        def ack() -> None:
            if self._generation == token.generation and channel.is_open:
                channel.basic_ack(token.mid)

        try:
            conn.add_callback_threadsafe(ack)
        except Exception as exc:
            log.warning("ack of delivery %s lost with its connection: %s", token.mid, exc)

    # -- the connection's thread -----------------------------------------------------------
    def _run(self) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            try:
                self._connect_and_consume()
                delay = 0.2
            except (pika.exceptions.AMQPError, OSError) as exc:
                if self.connected.is_set():
                    self._set_connected(False)
                log.warning("RabbitMQ connection lost or refused (%s): %r", self.node, exc)
            finally:
                self._conn, self._channel = None, None
            if not self._stopping.wait(delay):
                delay = min(delay * 2, 5.0)

    def _connect_and_consume(self) -> None:
        # Rotate the first node tried, so that servers spread over the nodes and a dead node
        # is not the first tried again and again.
        order = self.params[self._next :] + self.params[: self._next]
        self._next = (self._next + 1) % len(self.params)
        conn = pika.BlockingConnection(order)
        self.node = f"{conn._impl.params.host}:{conn._impl.params.port}"
        try:
            channel = conn.channel()
            channel.queue_declare(self.queue, durable=True, arguments=QUEUE_ARGUMENTS)
            channel.queue_bind(self.queue, EXCHANGE, routing_key=UPLINK_BINDING)
            channel.basic_qos(prefetch_count=self.prefetch)
            probe = channel.queue_declare("", exclusive=True, auto_delete=True)
            self._probe_queue = probe.method.queue
            probe_key = routing_key(probe_topic(self.client_id))
            channel.queue_bind(self._probe_queue, EXCHANGE, routing_key=probe_key)
            self._generation += 1
            self.acks.reset()
            self._conn, self._channel = conn, channel
            channel.basic_consume(self._probe_queue, self._on_probe, auto_ack=True)
            channel.basic_consume(
                self.queue, self._on_delivery, auto_ack=False, consumer_tag=self._tag()
            )
            channel.basic_publish(EXCHANGE, probe_key, self.probe.new_nonce())
            log.info("connected to RabbitMQ %s, consuming %s", self.node, self.queue)
            self._set_connected(True)
            while not self._stopping.is_set():
                conn.process_data_events(time_limit=0.2)
            # Stopping: run the acks the ingest writer queued while it drained, then close.
            conn.process_data_events(time_limit=0)
        finally:
            if conn.is_open:
                with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                    conn.close()
        self._set_connected(False)

    def _tag(self) -> str:
        return f"{self.client_id}-{self._generation}"

    def _set_connected(self, up: bool) -> None:
        if up:
            self.connected.set()
        else:
            self.connected.clear()
            self.probe.ok.clear()
        if self._on_connected is not None:
            self._on_connected(up)

    def _on_probe(self, channel: BlockingChannel, method: Any, props: Any, body: bytes) -> None:
        self.probe.arrived(body)

    def _on_delivery(self, channel: BlockingChannel, method: Any, props: Any, body: bytes) -> None:
        key: str = method.routing_key
        if key.endswith(".cmd"):
            channel.basic_ack(method.delivery_tag)  # a downlink, matched by vigie.v1.dev.*.*
            return
        token = AckToken(self._generation, method.delivery_tag, 1)
        self.acks.register()
        try:
            assert self._handler is not None  # set by start(), before the thread runs
            self._handler(topic_of(key), body, False, functools.partial(self.acks.done, token))
        except Exception:
            # As on the MQTT path: a bug in the handler must not stall the queue.
            log.exception("ingest handler failed for %s", key)
            self.acks.done(token)
