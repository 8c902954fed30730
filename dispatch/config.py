"""Dispatch's settings and the report of one engine pass; plain data, no behaviour.

Kept apart so that every dispatch module, and the alert server that builds the settings, can
import them without importing the engine.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from dispatch.messages import Lang


def utcnow() -> datetime:
    return datetime.now(UTC)


def _default_server_id() -> str:
    return f"{socket.gethostname()[:60]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class DispatchConfig:
    public_url: str = "http://127.0.0.1:8000"
    lang: Lang = "fr"
    # A claim not finished within the lease is taken over by another server. Longer than the
    # provider time-out (10 s) so a slow but alive server is never overtaken.
    lease_s: float = 60.0
    batch_size: int = 200
    # Send workers for the urgent class (first pass of a chain, duress, verification calls)
    # and, apart, for the lower classes (reminders, "taken by", stand-down): a flood of
    # low-class messages can never occupy a worker an alert needs.
    send_workers: int = 8
    low_send_workers: int = 4
    # Transient failures (5xx, 429, time-out): retried after these delays, then given up
    # (and the next step pulled forward).
    retry_backoff_s: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
    # Rate limits. The urgent class is never limited (GoAlert #2778: a throttle must never
    # hold back a life-safety page); the lower classes (repeat passes, "taken by",
    # "cancelled") wait when a number or the server is too busy: a number's waiting messages
    # are lined up on its next free slots (one every window/max), each deferred once.
    per_number_max: int = 10
    per_number_window_s: float = 60.0
    global_max: int = 30
    global_window_s: float = 1.0
    # SMS acknowledgement: after this many wrong codes from one number within the window, its
    # code replies are refused for a while (the call and the console still work).
    sms_ack_max_wrong: int = 5
    sms_ack_lock_window_s: float = 900.0
    server_id: str = field(default_factory=_default_server_id)
    # Automatic alarms of these kinds first call the worker's own phone ("press 1 if you are
    # fine"); the chain is held this long, then notified whatever happened. 0 disables it
    # (dispatch on its own); the alert server passes its setting (30 s by default).
    verify_s: float = 0.0
    verify_kinds: tuple[str, ...] = ("fall", "no_motion")


@dataclass
class TickReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    deferred: int = 0
    skipped: int = 0
    exhausted: list[str] = field(default_factory=list)

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)
