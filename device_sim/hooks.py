"""What the simulator may ask of the rest of the system, behind small interfaces.

Scenarios and the load report check more than what a device can see: whether an alert was
stored exactly once, when the first SMS/call left, who acknowledged. Each of these is a hook
with a plain-Python form (tests pass callables reading the database) and an HTTP form (the
server's API, for runs against a live server).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import httpx
import paho.mqtt.client as mqtt

from device_sim.reactor import set_nodelay
from vigie import topics


class AlertStore(Protocol):
    """Alerts as the server stored them: dicts with at least ``alert_id``, ``device_id``,
    ``kind``, ``state``, and ``duress`` (bool) or ``flags`` (list)."""

    def alerts(
        self, *, alert_id: str | None = None, device_id: str | None = None
    ) -> list[dict[str, Any]]: ...


class Responder(Protocol):
    """Someone taking an alert in charge (dashboard/API acknowledgement)."""

    def ack(self, alert_id: str) -> None: ...


class BrokerControl(Protocol):
    """Crash and restart the broker (outage scenarios)."""

    def stop(self) -> None: ...

    def start(self) -> None: ...


# alert_ids → time the first notification (SMS or call) left for each, None when none did.
FirstNotificationSource = Callable[[Sequence[str]], Mapping[str, datetime | None]]


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def http_first_notifications(url: str, timeout_s: float = 30.0) -> FirstNotificationSource:
    """A first-notification source reading ``GET url``.

    The endpoint returns either an object ``{"<alert_id>": "<RFC 3339>" | null, …}`` or a list
    of ``{"alert_id": …, "first_notification_at": …}``. The alert ids asked for are sent as
    JSON in a POST when there are many (``{"alert_ids": [...]}``), as ``?alert_id=`` otherwise;
    an endpoint may ignore them and return everything it knows.
    """

    def fetch(alert_ids: Sequence[str]) -> Mapping[str, datetime | None]:
        if len(alert_ids) > 50:
            r = httpx.post(url, json={"alert_ids": list(alert_ids)}, timeout=timeout_s)
        else:
            r = httpx.get(url, params=[("alert_id", a) for a in alert_ids], timeout=timeout_s)
        r.raise_for_status()
        data = r.json()
        out: dict[str, datetime | None] = {}
        if isinstance(data, dict):
            for k, v in data.items():
                out[str(k)] = _parse_time(v)
        elif isinstance(data, list):
            for item in data:
                if isinstance(item, dict) and "alert_id" in item:
                    out[str(item["alert_id"])] = _parse_time(item.get("first_notification_at"))
        return out

    return fetch


@dataclass
class HttpApi:
    """The server's HTTP API (operations.md): an ``AlertStore`` and a ``Responder``."""

    base_url: str
    username: str
    password: str
    timeout_s: float = 10.0
    _token: str | None = None

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            r = httpx.post(
                self.base_url.rstrip("/") + "/api/token",
                data={"username": self.username, "password": self.password},
                timeout=self.timeout_s,
            )
            r.raise_for_status()
            self._token = str(r.json()["access_token"])
        return {"Authorization": f"Bearer {self._token}"}

    def alerts(
        self, *, alert_id: str | None = None, device_id: str | None = None
    ) -> list[dict[str, Any]]:
        base = self.base_url.rstrip("/")
        if alert_id is not None:
            r = httpx.get(
                f"{base}/api/alerts/{alert_id}", headers=self._headers(), timeout=self.timeout_s
            )
            if r.status_code == 404:
                return []
            r.raise_for_status()
            return [r.json()]
        r = httpx.get(f"{base}/api/alerts", headers=self._headers(), timeout=self.timeout_s)
        r.raise_for_status()
        rows = [a for a in r.json() if isinstance(a, dict)]
        return [a for a in rows if device_id is None or a.get("device_id") == device_id]

    def ack(self, alert_id: str) -> None:
        r = httpx.post(
            f"{self.base_url.rstrip('/')}/api/alerts/{alert_id}/ack",
            headers=self._headers(),
            timeout=self.timeout_s,
        )
        r.raise_for_status()


def is_duress(alert: Mapping[str, Any]) -> bool:
    return bool(alert.get("duress")) or "duress" in (alert.get("flags") or [])


@dataclass
class StatusObserver:
    """Watches every device's ``status`` topic with the server's broker account, to see the
    last will arrive (devices cannot read each other's topics)."""

    url: str  # mqtt://vigie-server:password@host:port
    protocol: str = "5"
    statuses: dict[str, list[tuple[float, str, bool]]] = field(default_factory=dict)
    _client: mqtt.Client | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, timeout_s: float = 10.0) -> StatusObserver:
        parts = urlsplit(self.url)
        proto = mqtt.MQTTv5 if self.protocol == "5" else mqtt.MQTTv311
        client_id = f"vigie-sim-observer-{int(time.time() * 1000) % 10**9}"
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto)
        if parts.username:
            c.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
        c.on_socket_open = lambda cl, u, s: set_nodelay(s)
        c.on_connect = lambda cl, u, f, rc, p: (
            None if rc.is_failure else cl.subscribe(f"{topics.PREFIX}/+/status", qos=1)
        )
        c.on_subscribe = lambda *a: self._ready.set()
        c.on_message = self._on_message
        c.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=30)
        c.loop_start()
        self._client = c
        if not self._ready.wait(timeout_s):
            self.stop()
            raise TimeoutError(
                f"status observer could not subscribe on {parts.hostname}:{parts.port}"
            )
        return self

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parsed = topics.parse(msg.topic)
        if parsed is None:
            return
        try:
            state = str(json.loads(msg.payload).get("state"))
        except (ValueError, AttributeError):
            return
        with self._lock:
            self.statuses.setdefault(parsed[0], []).append((time.monotonic(), state, msg.retain))

    def states(self, device_id: str) -> list[str]:
        with self._lock:
            return [s for _, s, _ in self.statuses.get(device_id, [])]

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
