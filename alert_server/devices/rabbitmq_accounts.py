"""Device accounts on RabbitMQ (``VIGIE_RABBITMQ_API_URL``), written by ``vigie devices
add/revoke`` as Mosquitto's password and ACL files are (``broker_files``).

Each device is a RabbitMQ user with no tag (it cannot use the management API) whose rights
reach only its own topics, as ``pattern write vigie/v1/dev/%u/…`` does on Mosquitto:

- resource permissions: its own MQTT subscription queue (``mqtt-subscription-<id>qos0|1``; the
  MQTT plugin names it after the client id, so a device can only connect as itself) and
  ``amq.topic``;
- topic permissions on ``amq.topic`` with RabbitMQ's ``{username}`` expansion: publish on
  ``vigie.v1.dev.{username}.(alert|cancel|session|hb|pos|status)``, subscribe to
  ``vigie.v1.dev.{username}.cmd`` (MQTT ``/`` is ``.`` in a routing key).

Revoking deletes the user, which closes its open connections.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from vigie.topics import UPLINKS

VHOST = "/"
TOPIC_WRITE = r"^vigie\.v1\.dev\.{username}\.(" + "|".join(UPLINKS) + r")$"
TOPIC_READ = r"^vigie\.v1\.dev\.{username}\.cmd$"


class BrokerAccountError(RuntimeError):
    """The management API refused or could not be reached; the message says which call."""


def device_permissions(device_id: str) -> dict[str, str]:
    own = rf"mqtt-subscription-{re.escape(device_id)}qos[01]"
    return {
        "configure": rf"^{own}$",
        "write": rf"^(amq\.topic|{own})$",
        "read": rf"^(amq\.topic|{own})$",
    }


class RabbitAccounts:
    def __init__(self, api_url: str, *, timeout_s: float = 15.0) -> None:
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"VIGIE_RABBITMQ_API_URL : URL http(s):// attendue, pas {api_url!r}")
        port = f":{parts.port}" if parts.port else ""
        self.base = f"{parts.scheme}://{parts.hostname}{port}/api"
        auth = (unquote(parts.username or ""), unquote(parts.password or ""))
        self._client = httpx.Client(auth=auth, timeout=timeout_s)
        self._vhost = quote(VHOST, safe="")

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = self._client.request(method, self.base + path, **kw)
        except httpx.HTTPError as exc:
            raise BrokerAccountError(f"API RabbitMQ injoignable ({method} {path}) : {exc}") from exc
        if r.status_code >= 400 and r.status_code != 404:
            raise BrokerAccountError(
                f"API RabbitMQ : {method} {path} refusé ({r.status_code} {r.text[:200]})"
            )
        return r

    def add_device(self, device_id: str, password: str) -> None:
        """Create (or reset) the device's user and its permissions; idempotent."""
        user = quote(device_id, safe="")
        self._call("PUT", f"/users/{user}", json={"password": password, "tags": ""})
        self._call("PUT", f"/permissions/{self._vhost}/{user}", json=device_permissions(device_id))
        self._call(
            "PUT",
            f"/topic-permissions/{self._vhost}/{user}",
            json={"exchange": "amq.topic", "write": TOPIC_WRITE, "read": TOPIC_READ},
        )

    def remove_device(self, device_id: str) -> int:
        """Delete the user and close its connections; the number of connections closed."""
        user = quote(device_id, safe="")
        # From the broker's connection tracking (not the statistics database, which lags by
        # seconds): every connection of the user, on every node.
        r = self._call("GET", f"/connections/username/{user}")
        open_now = len(r.json()) if r.status_code == 200 else 0
        # Deleting the user closes its tracked connections; closing them by name as well
        # covers a connection that a node had not yet tracked.
        self._call("DELETE", f"/users/{user}")
        self._call(
            "DELETE", f"/connections/username/{user}", headers={"X-Reason": "vigie: revoked"}
        )
        return open_now

    def permissions(self, device_id: str) -> dict[str, Any] | None:
        """What the broker holds for the device (None when the user does not exist)."""
        user = quote(device_id, safe="")
        r = self._call("GET", f"/users/{user}")
        if r.status_code == 404:
            return None
        topic = self._call("GET", f"/users/{user}/topic-permissions").json()
        perms = self._call("GET", f"/users/{user}/permissions").json()
        return {"permissions": perms, "topic_permissions": topic}
