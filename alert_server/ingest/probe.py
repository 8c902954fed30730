"""The subscription probe (operations.md 1.1): a server sends a message to itself through the
broker at every (re)connection (on MQTT when it uses a shared group; on AMQP always) and
reports healthy only once it has come back.

Why: RabbitMQ 3.10's MQTT plugin accepts a ``$share/…`` subscription (SUBACK "granted QoS 1")
and then delivers nothing to it. A server configured with a shared group on that broker would
receive no alert at all while ``/healthz`` said OK. The probe goes through exactly the kind of
subscription the server uses for devices (the same ``$share`` group on MQTT; ``amq.topic`` and a
queue consumed on the server's own connection on AMQP), on a topic only this server listens to.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable

from vigie.topics import PROBE_PREFIX

log = logging.getLogger(__name__)

# Long enough for a busy broker, short enough that a silent subscription is seen at once.
PROBE_TIMEOUT_S = 15.0


def probe_topic(client_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in client_id)
    return f"{PROBE_PREFIX}/{safe}"


class SubscriptionProbe:
    """One outstanding nonce per connection; ``ok`` is set when it came back."""

    def __init__(
        self, describe: str, *, timeout_s: float = PROBE_TIMEOUT_S, clock: Callable[[], float]
    ) -> None:
        self.describe = describe
        self.timeout_s = timeout_s
        self._clock = clock
        self.ok = threading.Event()
        self.failed = threading.Event()
        self._nonce: bytes | None = None
        self._sent_at = 0.0
        self.round_trip_s: float | None = None
        self._lock = threading.Lock()

    def new_nonce(self) -> bytes:
        """Called at each (re)connection, before the probe message is published."""
        with self._lock:
            self.ok.clear()
            self.failed.clear()
            self._nonce = b"vigie-probe:" + secrets.token_hex(12).encode()
            self._sent_at = self._clock()
            nonce = self._nonce
        threading.Thread(target=self._watch, args=(nonce,), daemon=True).start()
        return nonce

    def arrived(self, payload: bytes) -> bool:
        """True when ``payload`` is this connection's nonce (a stale one is ignored)."""
        with self._lock:
            if self._nonce is None or payload != self._nonce:
                return False
            self.round_trip_s = self._clock() - self._sent_at
            self._nonce = None
            self.ok.set()
            self.failed.clear()
        log.info("subscription probe came back in %.3f s (%s)", self.round_trip_s, self.describe)
        return True

    def _watch(self, nonce: bytes) -> None:
        deadline = self._clock() + self.timeout_s
        while self._clock() < deadline:
            if self.ok.is_set():
                return
            time.sleep(0.1)
        with self._lock:
            if self._nonce != nonce:
                return
            self.failed.set()
        log.critical(
            "Le message de contrôle envoyé par ce serveur à lui-même n'est pas revenu en %.0f s "
            "(%s) : le broker accepte l'abonnement mais ne le livre pas, ce serveur ne recevrait "
            "aucune alerte. /healthz reste en erreur (503) ; vérifier VIGIE_MQTT_SHARED_GROUP "
            "(RabbitMQ 3.x ne livre pas $share) ou utiliser VIGIE_INGEST=amqp.",
            self.timeout_s,
            self.describe,
        )
