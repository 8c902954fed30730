"""A device on RabbitMQ's MQTT plugin (MQTT 3.1.1 only on 3.10) and a server environment for
``VIGIE_INGEST=amqp``."""

from __future__ import annotations

import os
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from tests.rabbit.cluster import RabbitCluster
from tests.support import SECRET_KEY, Device


@dataclass
class Device311(Device):
    """``tests.support.Device`` speaking MQTT 3.1.1 (persistent session unless ``clean``)."""

    def connect(self, timeout_s: float = 30.0, clean: bool = True) -> bool:
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            protocol=mqtt.MQTTv311,
            clean_session=clean,
        )
        c.username_pw_set(self.device_id, self.password)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_disconnect = lambda *a: self.disconnected.set()
        c.reconnect_delay_set(1, 2)
        self.client = c
        c.connect("127.0.0.1", self.port, keepalive=30)
        c.loop_start()
        self._connected.wait(timeout_s)
        if self.connect_rc is None or self.connect_rc.is_failure:
            self.close()  # or its thread goes on reconnecting (``Device.connect``)
            return False
        return self._subscribed.wait(timeout_s)


def amqp_env(cluster: RabbitCluster, db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
    env.update(
        VIGIE_TELEPHONY="simulated",
        VIGIE_INTERNAL_ACCESS="network",  # tests and benchmarks read /metrics from loopback
        VIGIE_SECRET_KEY=SECRET_KEY,
        VIGIE_DATABASE_URL=db_url,
        VIGIE_INGEST="amqp",
        VIGIE_AMQP_URL=cluster.amqp_url(),
        VIGIE_RABBITMQ_API_URL=cluster.api_url(),
        VIGIE_PRESENCE_FLUSH_S="0.2",
    )
    env.update(extra)
    return env
