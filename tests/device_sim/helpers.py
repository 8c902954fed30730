"""A client on the server's broker account: sees every uplink, can send any command."""

from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from vigie import payloads, topics
from vigie.timeutil import utcnow


class ServerAccount:
    def __init__(self, url: str, client_id: str = "test-server-account", protocol: str = "5"):
        parts = urlsplit(url)
        proto = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto)
        c.username_pw_set(parts.username, parts.password)
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(
            [(f"{topics.PREFIX}/+/{s}", 1) for s in topics.UPLINKS]
        )
        c.on_subscribe = lambda *a: ready.set()
        c.on_message = self._on_message
        c.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        c.loop_start()
        assert ready.wait(10), "server account could not subscribe"
        self.client = c

    def _on_message(self, client: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, json.loads(msg.payload), msg.retain))

    def uplinks(self, device_id: str, suffix: str) -> list[dict[str, Any]]:
        topic = f"{topics.PREFIX}/{device_id}/{suffix}"
        with self._lock:
            return [body for t, body, _ in self.messages if t == topic]

    def command(self, device_id: str, type_: payloads.CommandType, **extra: Any) -> None:
        self.client.publish(
            topics.cmd(device_id), payloads.command(type_, utcnow(), **extra), qos=1
        ).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
