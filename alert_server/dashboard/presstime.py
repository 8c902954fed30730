"""When the worker pressed the button, as far as the console can tell.

Dispatchers need "how long has this person been waiting", which starts at the press on the
device, not at reception: after a network outage or a server restart, alerts pressed a minute
apart must not all read "6 s". The device's clock is not trusted blindly: its time is kept
only within a window before reception (an alert cannot be pressed after it was received, and
a clock hours off would make a fresh alert look ancient); outside that window the time is
bounded and the alert flagged, so that the dispatcher knows the timer is approximate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from alert_server.alerts.models import Alert
from vigie.timeutil import as_utc
from vigie.vocabulary import AlertState

# A device clock ahead of the server by less than this is ordinary drift: reception time.
FUTURE_TOLERANCE = timedelta(minutes=2)
# The longest a press may plausibly wait in a device's offline queue before reception.
MAX_DELAY = timedelta(hours=6)


@dataclass(frozen=True, slots=True)
class PressTime:
    at: datetime
    # The device's clock could not be believed: ``at`` was bounded (shown as approximate).
    skewed: bool


def press_time(alert: Alert) -> PressTime:
    received = as_utc(alert.created_at)
    flagged = "clock_skew" in (alert.flags or [])
    if alert.device_ts is None:
        return PressTime(received, flagged)
    device = as_utc(alert.device_ts)
    if device > received + FUTURE_TOLERANCE:
        return PressTime(received, True)
    if device > received:
        return PressTime(received, flagged)
    if device < received - MAX_DELAY:
        return PressTime(received - MAX_DELAY, True)
    return PressTime(device, flagged)


def urgency_group(alert: Alert) -> int:
    """0 duress waiting, 1 waiting, 2 taken in charge, 3 closed or cancelled."""
    if alert.state == AlertState.OPEN:
        return 0 if alert.duress else 1
    return 2 if alert.state == AlertState.ACKNOWLEDGED else 3


def urgency_key(alert: Alert) -> tuple[int, float]:
    """Queue order: duress first, then the unacknowledged who waited longest (oldest press
    first), then the rest (taken in charge, then closed), newest first. The board's script
    applies the same order to rows that arrive live."""
    group = urgency_group(alert)
    at = press_time(alert).at.timestamp()
    return (group, at if group < 2 else -at)
