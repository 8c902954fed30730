"""The one interface every channel implements, and how a failed send is classified."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SendResult:
    """What the provider accepted: its identifier and its first status."""

    sid: str
    status: str  # e.g. "queued", "accepted"


class SendError(Exception):
    """Base class: ``code`` is the provider's error code (Twilio's 21211…) or an HTTP status."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class TransientSendError(SendError):
    """5xx, 429, time-out, connection refused: retry later with backoff (a new row time)."""


class PermanentSendError(SendError):
    """Invalid or non-mobile number, other 4xx: move on to the next channel or contact now."""


class Notifier(Protocol):
    """Sends one SMS or places one call. Blocking; bounded by its own time-out.

    ``notification_id`` identifies the row: the voice channel builds the TwiML URL from it.
    Implementations raise ``TransientSendError`` or ``PermanentSendError``; anything else is
    treated as transient by the engine.
    """

    name: str

    def send_sms(
        self, *, to: str, body: str, notification_id: int, alert_id: str
    ) -> SendResult: ...

    def place_call(self, *, to: str, notification_id: int, alert_id: str) -> SendResult: ...


# A notifier may also offer, for the engine's reconciliation after a crash:
#     find_accepted(*, channel, to, body_sha256, since) -> list[tuple[SendResult, datetime]]
# what the provider accepted for ``to`` (and, for an SMS, whose text has that SHA-256) since
# ``since``. Without it, a row left ``sending`` by a crashed server is simply sent again.
