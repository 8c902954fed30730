"""Every message the server sends to a device (protocol.md "Downlink"), in one place.

The rules that protect the worker live here, so that no caller can forget them:
- **Duress is invisible.** After a duress cancel the device receives, for that alert, exactly
  what a real cancel gives: ``alert.cancelled``, then nothing more (no ``alert.acknowledged``,
  no ``alert.resolved``, no ``locate``). An aggressor holding the device must not learn that
  help is coming (protocol.md 1.1). So both are quiet: once the device has cancelled an alert
  (either PIN), nothing more about it is sent, whatever the dispatchers do with it later.
- **A discreet alert stays discreet**: ``alert.acknowledged`` is still sent for ``sos_silent``
  (the device must stay silent, protocol.md), never anything louder.
- **Message expiry** (MQTT 5, where the broker supports it): 24 h for commands about an alert,
  60 s for ``locate``; a device that comes back days later is not told stale news.
- ``alert.acknowledged`` names the service that took the alert, never a person's number.
- ``error`` replies are informative only, and at most one per device per second: a device
  sending garbage cannot make the server flood the broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from vigie import topics
from vigie.payloads import command
from vigie.timeutil import utcnow
from vigie.vocabulary import AlertState, DownlinkType

log = logging.getLogger(__name__)

# The commands about an alert, and about a timed visit.
AlertCommand = DownlinkType
SessionCommand = DownlinkType

ALERT_EXPIRY_S = 24 * 3600
LOCATE_EXPIRY_S = 60
ERROR_MIN_INTERVAL_S = 1.0
# Never sent about an alert the device has cancelled (duress looks exactly like a cancel).
_HIDDEN_AFTER_CANCEL = frozenset(
    {
        DownlinkType.ALERT_ACKNOWLEDGED,
        DownlinkType.ALERT_RESOLVED,
        DownlinkType.ALERT_RAISED,
        DownlinkType.LOCATE,
    }
)


class Publish(Protocol):
    """Publish one downlink at QoS 1 (``expiry_s``: MQTT 5 message expiry, None for none)."""

    def __call__(self, topic: str, payload: bytes, *, expiry_s: int | None = None) -> None: ...


class AlertLike(Protocol):
    """What a downlink needs to know of an alert (an ``Alert`` row has it)."""

    @property
    def device_id(self) -> str: ...

    @property
    def device_alert_id(self) -> str: ...

    @property
    def duress(self) -> bool: ...

    @property
    def state(self) -> str: ...


@dataclass(frozen=True, slots=True)
class AlertRef:
    """An alert as the device knows it, detached from any database session. ``quiet``: the
    device cancelled it (cancel PIN, or duress PIN), so it hears nothing more about it."""

    device_id: str
    device_alert_id: str
    quiet: bool

    @classmethod
    def of(cls, alert: AlertLike) -> AlertRef:
        return cls(
            alert.device_id,
            alert.device_alert_id,
            bool(alert.duress) or alert.state == AlertState.CANCELLED,
        )


class Downlink:
    def __init__(self, publish: Publish, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._publish = publish
        self._clock = clock
        self._errors_lock = threading.Lock()
        self._last_error: dict[str, float] = {}

    def _send(self, device_id: str, body: bytes, expiry_s: int | None) -> None:
        try:
            self._publish(topics.cmd(device_id), body, expiry_s=expiry_s)
        except Exception:
            # A downlink is never worth an exception in the caller (often after a commit).
            log.exception("downlink to device_id=%s failed", device_id)

    def alert(self, alert: AlertRef | AlertLike, type_: AlertCommand, **fields: Any) -> None:
        """A command about one alert, unless the rules above hold it back."""
        ref = alert if isinstance(alert, AlertRef) else AlertRef.of(alert)
        if ref.quiet and type_ in _HIDDEN_AFTER_CANCEL:
            log.info(
                "not telling the device (cancelled by it) type=%s device_id=%s alert_id=%s",
                type_,
                ref.device_id,
                ref.device_alert_id,
            )
            return
        expiry = LOCATE_EXPIRY_S if type_ == DownlinkType.LOCATE else ALERT_EXPIRY_S
        body = command(type_, self._clock(), alert_id=ref.device_alert_id, **fields)
        self._send(ref.device_id, body, expiry)

    def session(self, device_id: str, type_: SessionCommand, **fields: Any) -> None:
        self._send(device_id, command(type_, self._clock(), **fields), ALERT_EXPIRY_S)

    def error(self, device_id: str, *, topic: str, reason: str) -> None:
        """``error``: an uplink message was rejected (informative; rate-limited per device)."""
        if not topics.valid_device_id(device_id):
            return
        now = time.monotonic()
        with self._errors_lock:
            last = self._last_error.get(device_id)
            if last is not None and now - last < ERROR_MIN_INTERVAL_S:
                return
            self._last_error[device_id] = now
            if len(self._last_error) > 10_000:
                horizon = now - ERROR_MIN_INTERVAL_S
                self._last_error = {k: v for k, v in self._last_error.items() if v >= horizon}
        self._send(
            device_id, command(DownlinkType.ERROR, self._clock(), topic=topic, reason=reason), 3600
        )
