"""The one interface every channel implements, and how a failed send is classified."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol


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


def credentials_rejected(error: SendError) -> bool:
    """The provider refused our account, not the message: Twilio answers HTTP 401 with error
    20003 ("Authenticate") for a wrong SID or token. Every later request will fail the same way
    until someone fixes the settings, whatever the number."""
    return error.status == 401 or error.code == "20003"


class ProviderHealth:
    """The outcome of the last request to the telephony provider, for ``GET /healthz``.

    Shared by every thread that sends (escalation workers, worker messages, the start-up
    check). A transient failure (5xx, 429, time-out) is recorded but is not a reason to call
    the server unhealthy: the request is retried and the provider usually recovers. Rejected
    credentials are: nothing will go out until the settings change, so they stay "rejected"
    until a later request succeeds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_request_at: datetime | None = None
        self._last_ok: bool | None = None
        self._last_error: str | None = None
        self._credentials_rejected = False

    def succeeded(self, at: datetime | None = None) -> None:
        with self._lock:
            self._last_request_at = at or datetime.now(UTC)
            self._last_ok = True
            self._last_error = None
            self._credentials_rejected = False

    def failed(self, error: SendError, at: datetime | None = None) -> None:
        with self._lock:
            self._last_request_at = at or datetime.now(UTC)
            self._last_ok = False
            code = f" (code {error.code})" if error.code else ""
            self._last_error = f"{error.message}{code}"
            if credentials_rejected(error):
                self._credentials_rejected = True

    @property
    def credentials_rejected(self) -> bool:
        with self._lock:
            return self._credentials_rejected

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "last_request_at": (
                    self._last_request_at.isoformat().replace("+00:00", "Z")
                    if self._last_request_at is not None
                    else None
                ),
                "last_ok": self._last_ok,
                "last_error": self._last_error,
                "credentials_rejected": self._credentials_rejected,
            }


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
