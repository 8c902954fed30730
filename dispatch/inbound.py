"""Inbound SMS: "OK 482" acknowledges the alert the code was reserved for; wrong codes are
counted per number and lock the number out for a while (docs/decisions).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, or_, select
from sqlmodel import Session

from dispatch.hooks import DispatchHooks
from dispatch.lifecycle import acknowledge
from dispatch.models import (
    ACK_CODE_MAX_DIGITS,
    ACK_CODE_MIN_DIGITS,
    KIND_ALERT,
    OPEN_STATUSES,
    SENDING,
    SENT,
)
from dispatch.schemas import AckResult
from dispatch.store import CODES, ESC, INBOUND, NOTIF, add_event, after_commit, alog
from dispatch.throttle import advisory_lock
from vigie.persistence import take_write_lock

if TYPE_CHECKING:
    pass

# --- inbound SMS ------------------------------------------------------------------------------

_ACK_RE = re.compile(rf"(?:OK)?([0-9]{{{ACK_CODE_MIN_DIGITS},{ACK_CODE_MAX_DIGITS}}})")


def parse_ack(body: str) -> tuple[str, str | None]:
    """("code", "482") for "OK 482", "ok482", " 4 8 2 ", "OK 4821"; ("ok", None) for a bare
    "OK". A code is 3 to 6 digits, as issued (``pick_code``)."""
    # Digits typed in another script (fullwidth, Arabic-Indic…) read as the ASCII digits.
    body = "".join(str(unicodedata.digit(c)) if c.isdecimal() else c for c in body)
    compact = re.sub(r"[\s.!,;:'\"-]+", "", body.upper())
    if compact in {"OK", "OUI", "YES"}:
        return "ok", None
    match = _ACK_RE.fullmatch(compact)
    if match:
        return "code", match.group(1)
    return "other", None


# Wrong codes from one number (guessing, or fingers): after SMS_ACK_MAX_WRONG of them within
# SMS_ACK_LOCK_WINDOW, code replies from that number are refused, even a right one, and the
# number is told to use the call or the console. Counted from the inbound rows themselves (so
# across servers and restarts); a refused reply counts too, so a number that keeps guessing
# stays blocked. The defaults; the engine passes DispatchConfig's values.
SMS_ACK_MAX_WRONG = 5
SMS_ACK_LOCK_WINDOW = timedelta(minutes=15)
WRONG_CODE = "unknown_code"  # a code reserved for no alert of this number
NOT_NOTIFIED = "not_notified"  # the code of an alert this number was not notified for (yet)
CODE_LOCKED = "code_locked"  # refused: too many wrong codes from this number lately
WRONG_CODE_OUTCOMES = (WRONG_CODE, NOT_NOTIFIED, CODE_LOCKED)
# Wrong codes are written on the timeline of the alerts the number was notified for: the most
# recent open ones (a number may hold hundreds), else its last alert.
WRONG_CODE_ALERTS = 3


@dataclass(frozen=True, slots=True)
class InboundOutcome:
    # acknowledged, already_<status>, not_notified, unknown_code, code_locked, ambiguous,
    # no_open_alert, unknown_sender, unrecognised, duplicate:<outcome>
    outcome: str
    alert_id: str | None = None
    ack: AckResult | None = None
    reply: tuple[str, str | None] | None = None  # (what to answer, alert_id) for the webhook
    # Other alerts whose timeline changed (wrong codes are written on several).
    related: tuple[str, ...] = ()


_NOTIFIED = or_(NOTIF.c.provider_sid.is_not(None), NOTIF.c.status.in_([SENDING, SENT]))


def _was_notified(session: Session, alert_id: str, phone: str) -> bool:
    return (
        session.execute(
            select(func.count())
            .select_from(NOTIF)
            .where(
                NOTIF.c.alert_id == alert_id,
                NOTIF.c.phone == phone,
                NOTIF.c.kind == KIND_ALERT,
                _NOTIFIED,
            )
        ).scalar_one()
        > 0
    )


def _notified_alerts(session: Session, phone: str, *, open_only: bool, limit: int) -> list[str]:
    """Alerts this number was (or may have been) sent an alert SMS or call for, the most
    recently notified first."""
    last = func.max(NOTIF.c.id).label("last")
    q = (
        select(NOTIF.c.alert_id, last)
        .where(NOTIF.c.phone == phone, NOTIF.c.kind == KIND_ALERT, _NOTIFIED)
        .group_by(NOTIF.c.alert_id)
        .order_by(last.desc())
        .limit(limit)
    )
    if open_only:
        q = q.where(
            NOTIF.c.alert_id.in_(select(ESC.c.alert_id).where(ESC.c.status.in_(OPEN_STATUSES)))
        )
    return [r[0] for r in session.execute(q).all()]


def wrong_codes_since(session: Session, *, phone: str, since: datetime) -> int:
    """Wrong (or refused) code replies from ``phone`` received since ``since``."""
    return int(
        session.execute(
            select(func.count())
            .select_from(INBOUND)
            .where(
                INBOUND.c.from_phone == phone[:20],
                INBOUND.c.received_at >= since,
                INBOUND.c.outcome.in_(WRONG_CODE_OUTCOMES),
            )
        ).scalar_one()
    )


def handle_inbound_sms(
    session: Session,
    *,
    from_phone: str,
    to_phone: str | None,
    body: str,
    sid: str | None,
    now: datetime,
    hooks: DispatchHooks,
    on_committed: Callable[[], None] | None = None,
    max_wrong: int = SMS_ACK_MAX_WRONG,
    lock_window: timedelta = SMS_ACK_LOCK_WINDOW,
) -> InboundOutcome:
    """An SMS reply. Acknowledges only with a code reserved for this number and only if this
    number was notified for that alert, and only while the number is not blocked for too many
    wrong codes. Everything is recorded, matched or not; wrong codes also on the alerts."""
    take_write_lock(session)
    # One number's replies are decided one at a time: two simultaneous guesses must not both
    # slip under the wrong-code limit.
    advisory_lock(session, f"dispatch-inbound:{from_phone}")
    if sid is not None:
        seen = session.execute(
            select(INBOUND.c.outcome, INBOUND.c.alert_id).where(INBOUND.c.provider_sid == sid)
        ).first()
        if seen is not None:  # Twilio retried the webhook: same answer, no new effect
            return InboundOutcome(outcome=f"duplicate:{seen[0]}", alert_id=seen[1])
    what, code = parse_ack(body)
    alert_id: str | None = None
    outcome: InboundOutcome
    known_number = (
        session.execute(select(CODES.c.id).where(CODES.c.phone == from_phone).limit(1)).first()
        is not None
    )
    wrong_before = 0
    if what == "code" and known_number:
        wrong_before = wrong_codes_since(session, phone=from_phone, since=now - lock_window)
    if what == "other" or not known_number:
        if not known_number and what == "code":
            # Not one of our contacts: change nothing, but link it to the alert for the record.
            alert_id = session.execute(
                select(ESC.c.alert_id)
                .where(ESC.c.ack_code == code, ESC.c.status.in_(OPEN_STATUSES))
                .limit(1)
            ).scalar()
        # Free text ("merci", "j'arrive") is recorded but not answered: a help text to every
        # chat message would be noise, and an answer to a stranger makes us a spam reflector.
        outcome = InboundOutcome(
            outcome="unknown_sender" if not known_number else "unrecognised",
            alert_id=alert_id,
        )
    elif what == "code" and wrong_before >= max_wrong:
        # Blocked: even the right code is refused (it may be the 900th guess). The call and
        # the console still acknowledge.
        outcome = InboundOutcome(outcome=CODE_LOCKED, reply=("locked", None))
    elif what == "code":
        # Open reservations first, then the most recent (a late reply to an alert whose
        # escalation ended: its code is not given again while it may still be answered).
        row = session.execute(
            select(CODES.c.alert_id)
            .where(CODES.c.phone == from_phone, CODES.c.code == code)
            .order_by(CODES.c.released_at.is_not(None), CODES.c.created_at.desc())
            .limit(1)
        ).first()
        if row is None:
            outcome = InboundOutcome(outcome=WRONG_CODE, reply=("unknown_code", None))
        else:
            outcome = _ack_by_sms(
                session,
                alert_id=row[0],
                from_phone=from_phone,
                now=now,
                hooks=hooks,
                on_committed=on_committed,
            )
    else:  # a bare OK: only if exactly one open alert was notified to this number
        # (an exhausted escalation is open: its codes are released, the alert is not over)
        candidates = _notified_alerts(session, from_phone, open_only=True, limit=2)
        if not candidates:
            outcome = InboundOutcome(outcome="no_open_alert", reply=("unknown_code", None))
        elif len(candidates) > 1:
            outcome = InboundOutcome(outcome="ambiguous", reply=("unknown_code", None))
        else:
            outcome = _ack_by_sms(
                session,
                alert_id=candidates[0],
                from_phone=from_phone,
                now=now,
                hooks=hooks,
                on_committed=on_committed,
            )
    if outcome.outcome in WRONG_CODE_OUTCOMES:
        outcome = _record_wrong_code(
            session,
            outcome=outcome,
            phone=from_phone,
            code=code or "",
            wrong=wrong_before + 1,
            max_wrong=max_wrong,
            lock_window=lock_window,
            now=now,
        )
    session.execute(
        INBOUND.insert().values(
            provider_sid=sid,
            from_phone=from_phone[:20],
            to_phone=to_phone[:20] if to_phone else None,
            body=body[:1600],
            received_at=now,
            alert_id=outcome.alert_id,
            outcome=outcome.outcome[:32],
        )
    )
    changed = tuple(dict.fromkeys(a for a in (outcome.alert_id, *outcome.related) if a))
    if changed:

        def _after() -> None:
            for changed_id in changed:
                hooks.after_change(changed_id)

        after_commit(session, _after)
    alog(logging.INFO, "inbound sms", outcome.alert_id, outcome=outcome.outcome)
    return outcome


def _ack_by_sms(
    session: Session,
    *,
    alert_id: str,
    from_phone: str,
    now: datetime,
    hooks: DispatchHooks,
    on_committed: Callable[[], None] | None,
) -> InboundOutcome:
    if not _was_notified(session, alert_id, from_phone):
        return InboundOutcome(outcome=NOT_NOTIFIED, alert_id=alert_id)
    name = session.execute(
        select(NOTIF.c.contact_name)
        .where(NOTIF.c.alert_id == alert_id, NOTIF.c.phone == from_phone)
        .limit(1)
    ).scalar()
    ack = acknowledge(
        session,
        alert_id=alert_id,
        by_name=name or from_phone,
        by_phone=from_phone,
        via="sms",
        now=now,
        hooks=hooks,
        on_committed=on_committed,
    )
    return InboundOutcome(
        outcome="acknowledged" if ack.accepted else f"already_{ack.status}",
        alert_id=alert_id,
        ack=ack,
        reply=None if ack.accepted else ("already", alert_id),
    )


def _record_wrong_code(
    session: Session,
    *,
    outcome: InboundOutcome,
    phone: str,
    code: str,
    wrong: int,
    max_wrong: int,
    lock_window: timedelta,
    now: datetime,
) -> InboundOutcome:
    """Write a wrong (or refused) code on the timeline of the alerts this number was notified
    for, and say when the number becomes blocked. Returns the outcome to record."""
    alerts = _notified_alerts(
        session, phone, open_only=True, limit=WRONG_CODE_ALERTS
    ) or _notified_alerts(session, phone, open_only=False, limit=1)
    minutes = round(lock_window.total_seconds() / 60)
    locked_now = outcome.outcome != CODE_LOCKED and wrong >= max_wrong
    if outcome.outcome == CODE_LOCKED:
        kind, detail = "code_refused", f"code {code} refusé : numéro bloqué (trop de codes erronés)"
    else:
        kind, detail = "wrong_code", f"code {code} erroné ({wrong}/{max_wrong} en {minutes} min)"
    for alert_id in alerts:
        add_event(
            session,
            alert_id=alert_id,
            at=now,
            kind=kind,
            channel="sms",
            phone=phone,
            status=outcome.outcome,
            detail=detail,
        )
        if locked_now:
            add_event(
                session,
                alert_id=alert_id,
                at=now,
                kind="code_locked",
                channel="sms",
                phone=phone,
                detail=f"{wrong} codes erronés en {minutes} min : réponses par SMS de ce numéro "
                f"refusées pendant {minutes} min (appel ou console)",
            )
    alog(
        logging.WARNING,
        "acknowledgement code refused" if outcome.outcome == CODE_LOCKED else "wrong code",
        outcome.alert_id or (alerts[0] if alerts else None),
        phone=phone,
        wrong=wrong,
        locked=locked_now or outcome.outcome == CODE_LOCKED,
    )
    return dataclasses.replace(
        outcome,
        alert_id=outcome.alert_id or (alerts[0] if alerts else None),
        related=tuple(alerts),
        reply=("locked", None) if locked_now else outcome.reply,
    )
