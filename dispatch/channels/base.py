"""The one interface every channel implements, and how a failed send is classified."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable


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


# --- what a notifier may also offer (each a Protocol, tested with isinstance) --------------


@runtime_checkable
class Reconciles(Protocol):
    """For the reconciliation after a crash (``dispatch.reconcile``): what the provider
    accepted for ``to`` (and, for an SMS, whose text has that SHA-256) since ``since``.
    Without it, a row left ``sending`` by a crashed server is simply sent again."""

    # The provider's own time-out: a send younger than this may still be in flight.
    http_timeout_s: float

    def find_accepted(
        self, *, channel: str, to: str, body_sha256: str | None, since: datetime
    ) -> list[tuple[SendResult, datetime]]: ...


@runtime_checkable
class Attaches(Protocol):
    """A channel that calls the dispatcher back by itself (the simulator answers, reports
    delivery): handed the dispatcher once, when the dispatcher is built."""

    def attach(self, dispatcher: Any) -> None: ...


@runtime_checkable
class AnswersItself(Protocol):
    """A channel whose simulated responders press 1 on every call after
    ``auto_ack_after_s`` seconds (None: they do not). Such a channel would impersonate the
    worker on a verification call."""

    auto_ack_after_s: float | None


@runtime_checkable
class ChecksCredentials(Protocol):
    """A channel that can tell, with one harmless request, whether its credentials work."""

    def check_credentials(self) -> bool: ...


@runtime_checkable
class Closes(Protocol):
    """A channel holding threads or timers to stop at shutdown."""

    def close(self) -> None: ...
