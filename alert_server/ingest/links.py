"""Which transport carries the uplink (``VIGIE_INGEST``): one place chooses, the rest of the
server sees one ``Link`` (connect, publish downlinks, probe; each message received is handed
over with its own ack, called after the commit).

Built first, before the downlink that publishes through it and the ingest writer that
receives from it: ``start(on_message)`` connects it to that writer, so nothing is attached
to anything after construction."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from alert_server.ingest.mqtt import MessageHandler, MqttLink
from alert_server.ingest.probe import SubscriptionProbe
from alert_server.settings import Settings


class Link(Protocol):
    @property
    def probe(self) -> SubscriptionProbe: ...

    @property
    def connected(self) -> threading.Event: ...

    def start(self, on_message: MessageHandler) -> None: ...

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
    on_connected: Callable[[bool], None] | None = None,
) -> Link:
    if settings.ingest == "amqp":
        # Imported only for VIGIE_INGEST=amqp: pika is not needed on MQTT.
        from alert_server.ingest.amqp import AmqpLink

        return AmqpLink(
            settings.amqp_url,
            client_id=settings.mqtt_client_id,
            queue=settings.amqp_queue,
            on_connected=on_connected,
        )
    return MqttLink(
        settings.mqtt_url,
        client_id=settings.mqtt_client_id,
        protocol=settings.mqtt_protocol,
        session_expiry_s=settings.mqtt_session_expiry_s,
        shared_group=settings.mqtt_shared_group,
        rescue=settings.mqtt_session_rescue,
        on_connected=on_connected,
    )
