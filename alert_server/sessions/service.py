"""Reads and state changes of timed visits. Keyword-only arguments, session first.

``on_message`` runs in the ingest writer's transaction and records what the device said; it
needs no settings: where a deadline depends on them (a start without ``expected_end``, a
check-in) it leaves ``due_at`` NULL and the engine's next tick computes it. A NULL deadline
never fires, so nothing can go off early in between.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_
from sqlmodel import Session, col, select

from alert_server.alerts import service as alerts
from alert_server.alerts.models import Alert
from alert_server.sessions.models import (
    ACTIVE,
    ALERTED,
    ENDED,
    RUNNING,
    WARNED,
    VisitSession,
)
from dispatch.schemas import AlertBrief
from vigie import payloads
from vigie.persistence import insert_ignore
from vigie.timeutil import as_utc

log = logging.getLogger(__name__)

# A device clock ahead of the server by more than this is corrected (deadlines only ever move
# earlier: a clock behind, or a message that waited in the device's queue, is left as sent).
CLOCK_AHEAD_TOLERANCE = timedelta(minutes=2)
# What of the memo goes into the responders' SMS (the dashboard shows all of it).
MEMO_IN_SMS_CHARS = 120

SESSION_TABLE = VisitSession.__table__  # type: ignore[attr-defined]


def session_alert_id(device_id: str, session_id: str, reason: str) -> str:
    """The deterministic id of the server-side alert of a session (``reason``: overdue or
    offline): two servers raising it at the same instant make one alert."""
    digest = hashlib.sha256(f"{device_id}\0{session_id}".encode()).hexdigest()[:40]
    return f"session-{reason}-{digest}"


def server_expected_end(expected_end: datetime, device_ts: datetime, now: datetime) -> datetime:
    """``expected_end`` on the server's clock. Only a device clock AHEAD is corrected: the
    correction then moves the deadline earlier, never later (safety first)."""
    ahead = as_utc(device_ts) - now
    if ahead > CLOCK_AHEAD_TOLERANCE:
        try:
            return as_utc(expected_end) - ahead
        except OverflowError:
            # A device clock centuries ahead: its times mean nothing; watch from now on.
            return now
    return as_utc(expected_end)


def get(session: Session, *, device_id: str, session_id: str) -> VisitSession | None:
    stmt = (
        select(VisitSession)
        .where(VisitSession.device_id == device_id)
        .where(VisitSession.session_id == session_id)
        .with_for_update()
    )
    return session.exec(stmt).first()


def running_for_device(session: Session, *, device_id: str) -> list[VisitSession]:
    stmt = (
        select(VisitSession)
        .where(VisitSession.device_id == device_id)
        .where(col(VisitSession.state).in_(RUNNING))
    )
    return list(session.exec(stmt))


def _insert(session: Session, values: dict[str, Any]) -> bool:
    return insert_ignore(session, VisitSession, values, keys=["device_id", "session_id"]) == 1


def _set_position(row: VisitSession, pos: payloads.Position | None, msg_ts: datetime) -> None:
    if pos is None:
        return
    at = as_utc(pos.ts or msg_ts)
    if row.pos_at is not None and as_utc(row.pos_at) > at:
        return
    row.pos_lat, row.pos_lon, row.pos_acc_m = pos.lat, pos.lon, pos.acc_m
    row.pos_at, row.pos_src = at, pos.src


def _position_values(pos: payloads.Position | None, msg_ts: datetime) -> dict[str, Any]:
    if pos is None:
        return {}
    return {
        "pos_lat": pos.lat,
        "pos_lon": pos.lon,
        "pos_acc_m": pos.acc_m,
        "pos_at": as_utc(pos.ts or msg_ts),
        "pos_src": pos.src,
    }


@dataclass(frozen=True, slots=True)
class SessionOutcome:
    """What the device is told (protocol.md 1.1): ``session.accepted`` with the deadline on
    the server's clock, or ``session.rejected`` with a reason — the worker must know whether
    she is being watched."""

    accepted: bool
    reason: str | None = None
    expected_end: datetime | None = None


def on_message(
    session: Session,
    *,
    device_id: str,
    msg: payloads.SessionMsg,
    now: datetime,
    default_duration_s: float | None = None,
    checkin_extend_s: float | None = None,
) -> SessionOutcome:
    """Apply one Session message (start, extend, checkin, end). Idempotent for repeats.

    The outcome's ``expected_end`` is the deadline the server now watches, which the device
    shows the worker: after a check-in that answers a warning (or comes after the announced
    end) it is the check-in plus ``checkin_extend_s`` (the engine's rule), never the end
    already past."""
    if (
        msg.action in ("start", "extend")
        and msg.expected_end is not None
        and as_utc(msg.expected_end) <= as_utc(msg.ts)
    ):
        # Past by the device's own clock: a mistake the worker must hear about, not a visit
        # that would raise its alarm at once.
        return SessionOutcome(accepted=False, reason="in_the_past")
    expected_end = server_expected_end(msg.expected_end, msg.ts, now) if msg.expected_end else None
    row = get(session, device_id=device_id, session_id=msg.session_id)
    if row is None:
        if msg.action == "end":
            log.info(
                "end of an unknown session device_id=%s session_id=%s", device_id, msg.session_id
            )
            return SessionOutcome(accepted=False, reason="unknown_session")
        if msg.action == "start":
            # A new visit while another is still running: the worker has moved on (she is
            # alive and using the device), so the older one is closed rather than left to raise
            # an overdue alert for a visit that is over.
            for other in running_for_device(session, device_id=device_id):
                log.info(
                    "session superseded device_id=%s session_id=%s by=%s",
                    device_id,
                    other.session_id,
                    msg.session_id,
                )
                other.state, other.ended_at, other.end_reason = ENDED, now, "superseded"
                other.due_at = other.offline_since = other.offline_due_at = None
                other.updated_at = now
                session.add(other)
        # An extend or a check-in of a session whose start never reached us: watch it from
        # now on rather than ignore a worker who believes she is watched.
        _insert(
            session,
            {
                "device_id": device_id,
                "session_id": msg.session_id,
                "state": ACTIVE,
                "memo": msg.memo,
                "started_at": now,
                "expected_end": expected_end,
                "due_at": expected_end,  # NULL without one: the engine applies the default
                "last_checkin_at": now if msg.action == "checkin" else None,
                "updated_at": now,
                **_position_values(msg.pos, msg.ts),
            },
        )
        log.info(
            "session %s device_id=%s session_id=%s expected_end=%s",
            msg.action,
            device_id,
            msg.session_id,
            expected_end.isoformat() if expected_end else None,
        )
        if expected_end is None and default_duration_s is not None:
            expected_end = now + timedelta(seconds=default_duration_s)
        return SessionOutcome(accepted=True, expected_end=expected_end)

    _set_position(row, msg.pos, msg.ts)
    if msg.memo and not row.memo:
        row.memo = msg.memo
    row.updated_at = now
    if row.state == ALERTED:
        # The alert is raised: a message from the device is recorded on it for the
        # responders, but never stands it down (it may be sent under threat; the cancel PIN
        # is the way to stop an alert).
        assert row.alert_id is not None
        alerts.add_event(
            session,
            alert_id=row.alert_id,
            at=now,
            type_=f"session_{msg.action}_after_alert",
            actor=device_id,
            expected_end=expected_end.isoformat() if expected_end else None,
        )
        if msg.action == "end":
            row.state, row.ended_at, row.end_reason = ENDED, now, "end"
        session.add(row)
        return _accepted(row)
    if row.state == ENDED:
        session.add(row)
        return _accepted(row)

    if msg.action == "start":
        pass  # a repeat of the start: nothing else changes
    elif msg.action == "extend":
        row.state, row.warned_at = ACTIVE, None
        if expected_end is not None:
            row.expected_end = expected_end
            row.due_at = expected_end
        else:
            # "extend" without a new end: treated as a check-in (the engine adds its time).
            row.last_checkin_at, row.due_at = now, None
    elif msg.action == "checkin":
        row.last_checkin_at = now
        overdue = row.expected_end is None or as_utc(row.expected_end) <= now
        if row.state == WARNED or overdue:
            # The worker answered the warning: the pending alert is cancelled and the next
            # deadline is computed by the engine (announced end or check-in + extension).
            row.state, row.due_at, row.warned_at = ACTIVE, None, None
            session.add(row)
            log.info(
                "session checkin device_id=%s session_id=%s state=%s",
                device_id,
                msg.session_id,
                row.state,
            )
            outcome = _accepted(row)
            if checkin_extend_s is None:
                return outcome
            rearmed = now + timedelta(seconds=checkin_extend_s)
            if outcome.expected_end is not None:
                rearmed = max(rearmed, outcome.expected_end)
            return replace(outcome, expected_end=rearmed)
    elif msg.action == "end":
        row.state, row.ended_at, row.end_reason = ENDED, now, "end"
        row.due_at = row.offline_since = row.offline_due_at = None
    session.add(row)
    log.info(
        "session %s device_id=%s session_id=%s state=%s",
        msg.action,
        device_id,
        msg.session_id,
        row.state,
    )
    return _accepted(row)


def _accepted(row: VisitSession) -> SessionOutcome:
    end = as_utc(row.expected_end) if row.expected_end is not None else None
    return SessionOutcome(accepted=True, expected_end=end)


def _session_of_alert(session: Session, alert: Alert) -> VisitSession | None:
    """The session an alert belongs to: the one that raised it, or the device's visit that
    was open when the alert was created (an SOS during a home visit)."""
    created = as_utc(alert.created_at)
    stmt = (
        select(VisitSession)
        .where(
            or_(
                col(VisitSession.alert_id) == alert.alert_id,
                (col(VisitSession.device_id) == alert.device_id)
                & (col(VisitSession.started_at) <= created)
                & (col(VisitSession.ended_at).is_(None) | (col(VisitSession.ended_at) >= created)),
            )
        )
        .order_by(
            (col(VisitSession.alert_id) == alert.alert_id).desc(),
            col(VisitSession.started_at).desc(),
        )
        .limit(1)
    )
    return session.exec(stmt).first()


def memo_for_alert(session: Session, alert: Alert) -> str | None:
    row = _session_of_alert(session, alert)
    return row.memo if row is not None else None


def brief_with_memo(session: Session, alert: Alert, brief: AlertBrief) -> AlertBrief:
    """The responders' brief with the visit memo as the place (often the patient's address,
    the most useful thing a patrol can have when the worker is inside a building)."""
    memo = memo_for_alert(session, alert)
    if not memo:
        return brief
    memo = " ".join(memo.split())
    if len(memo) > MEMO_IN_SMS_CHARS:
        memo = memo[: MEMO_IN_SMS_CHARS - 1].rstrip() + "…"
    place = f"{brief.place_label} / {memo}" if brief.place_label else memo
    return replace(brief, place_label=place)
