"""Which transport carries the uplink (``VIGIE_INGEST``): one place chooses, the rest of the
server sees one ``Link`` (connect, ack after commit, publish downlinks, probe)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from alert_server.ingest.amqp import AmqpLink
from alert_server.ingest.mqtt import AckToken, MessageHandler, MqttLink
from alert_server.ingest.probe import SubscriptionProbe
from alert_server.settings import Settings


class Acks(Protocol):
    def done(self, token: AckToken) -> None: ...


class Link(Protocol):
    @property
    def acks(self) -> Acks: ...

    @property
    def probe(self) -> SubscriptionProbe: ...

    @property
    def connected(self) -> threading.Event: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def wait_connected(self, timeout_s: float) -> bool: ...

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        *,
        expiry_s: int | None = None,
    ) -> None: ...


def build_link(
    settings: Settings,
    *,
    on_message: MessageHandler,
    on_connected: Callable[[bool], None] | None = None,
) -> Link:
    if settings.ingest == "amqp":
        return AmqpLink(
            settings.amqp_url,
            client_id=settings.mqtt_client_id,
            queue=settings.amqp_queue,
            on_message=on_message,
            on_connected=on_connected,
        )
    return MqttLink(
        settings.mqtt_url,
        client_id=settings.mqtt_client_id,
        protocol=settings.mqtt_protocol,
        session_expiry_s=settings.mqtt_session_expiry_s,
        shared_group=settings.mqtt_shared_group,
        rescue=settings.mqtt_session_rescue,
        on_message=on_message,
        on_connected=on_connected,
    )
