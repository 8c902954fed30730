"""The words that cross Vigie's boundaries, written once.

A state, a kind or a message type travels from the device to the server, from the server to
dispatch and to the console, and back down to the device. Spelled as free strings in each place,
a typo is a silent bug (an alert that is never "open" again is never escalated). Each word is a
``StrEnum`` member here: it compares equal to, hashes like and is stored as its plain string, so
the database, the JSON payloads and protocol.md stay exactly as they are.

Only words really used are listed; ``tests/test_vocabulary.py`` checks the timeline event types
against the code that writes them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class UplinkTopic(StrEnum):
    """The last level of a device → server topic (protocol.md §2)."""

    ALERT = "alert"
    CANCEL = "cancel"
    SESSION = "session"
    HB = "hb"
    POS = "pos"
    STATUS = "status"


class DownlinkType(StrEnum):
    """The ``type`` of a server → device ``cmd`` message (protocol.md §4 and 1.1)."""

    ALERT_RECEIVED = "alert.received"
    ALERT_ACKNOWLEDGED = "alert.acknowledged"
    ALERT_CANCELLED = "alert.cancelled"
    ALERT_RESOLVED = "alert.resolved"
    ALERT_RAISED = "alert.raised"
    CANCEL_REJECTED = "cancel.rejected"
    SESSION_ACCEPTED = "session.accepted"
    SESSION_REJECTED = "session.rejected"
    SESSION_WARNING = "session.warning"
    LOCATE = "locate"
    ERROR = "error"


class SessionAction(StrEnum):
    """The ``action`` of a ``session`` message (protocol.md: timed visit / check-in)."""

    START = "start"
    EXTEND = "extend"
    CHECKIN = "checkin"
    END = "end"


class AlertKind(StrEnum):
    """What an alert is. The first four come from devices (protocol.md); the last two are
    raised by the server when a timed visit runs out (dispatch escalates them as an SOS)."""

    SOS = "sos"
    SOS_SILENT = "sos_silent"
    FALL = "fall"
    NO_MOTION = "no_motion"
    SESSION_OVERDUE = "session_overdue"
    SESSION_OFFLINE = "session_offline"


DEVICE_KINDS: Final = frozenset(
    {AlertKind.SOS, AlertKind.SOS_SILENT, AlertKind.FALL, AlertKind.NO_MOTION}
)


class AlertState(StrEnum):
    """Where an alert is in its life (``alert_server/alerts/lifecycle.py`` moves it)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    CANCELLED = "cancelled"
    RESOLVED = "resolved"
    # Left open past the alerts' retention period: closed by the purge, then pseudonymised
    # (operations.md, retention). Nobody can still be helped by it.
    EXPIRED = "expired"


# Still running: escalated or being handled. The others are closed.
ACTIVE_STATES: Final = (AlertState.OPEN, AlertState.ACKNOWLEDGED)
CLOSED_STATES: Final = (AlertState.CANCELLED, AlertState.RESOLVED, AlertState.EXPIRED)


class AlertEventType(StrEnum):
    """A line of an alert's timeline, as the alert server writes it."""

    RECEIVED = "received"
    REPEAT = "repeat"
    PRESS_MERGED = "press_merged"
    LOCATED = "located"
    POSITION = "position"
    DISPATCHED = "dispatched"
    ACKNOWLEDGED = "acknowledged"
    DURESS = "duress"
    CANCELLED = "cancelled"
    CANCEL_AFTER_DURESS = "cancel_after_duress"
    PIN_WRONG = "pin_wrong"
    PIN_UNVERIFIABLE = "pin_unverifiable"
    PIN_LOCKED_OUT = "pin_locked_out"
    PIN_LOCKOUT = "pin_lockout"
    RESOLVED = "resolved"
    EXHAUSTED = "exhausted"
    VERIFIED_FALSE_ALARM = "verified_false_alarm"
    VICTIM_SUPPORT_OFFERED = "victim_support_offered"
    SESSION_START_AFTER_ALERT = "session_start_after_alert"
    SESSION_EXTEND_AFTER_ALERT = "session_extend_after_alert"
    SESSION_CHECKIN_AFTER_ALERT = "session_checkin_after_alert"
    SESSION_END_AFTER_ALERT = "session_end_after_alert"
    NOTE = "note"
    POLICE_REF = "police_ref"
    EXPIRED = "expired"


class Role(StrEnum):
    """A console account's role."""

    ADMIN = "admin"
    DISPATCHER = "dispatcher"


class Channel(StrEnum):
    """How dispatch reaches a person."""

    SMS = "sms"
    VOICE = "voice"


# The words the browsers need (the console's scripts, the worker's app): given to them by the
# server from here, so that the pages never spell a state, a kind or a message type.
FOR_BROWSERS: Final = (
    AlertState,
    AlertKind,
    DownlinkType,
    UplinkTopic,
    SessionAction,
    Channel,
    Role,
)


def for_browsers() -> dict[str, dict[str, str]]:
    """``{"AlertState": {"OPEN": "open", …}, …}``: each enum of ``FOR_BROWSERS`` by name."""
    return {enum.__name__: {m.name: m.value for m in enum} for enum in FOR_BROWSERS}
