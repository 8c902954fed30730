"""Verification of automatic alarms: the worker's own phone is called before the chain.

A fall or no-motion alarm is often a dropped device. Before a police referent is disturbed,
the worker's own phone rings: "press 1 if you are fine". The design is fail-safe by
construction:

- the escalation is started and fully planned in the same transaction as the verification,
  its notifications only pushed back to ``deadline_at`` (``hold``). Nothing has to *start* the
  chain later: if the verification call is lost, the server dies, a webhook never arrives, the
  rows simply become due at the deadline and any server's engine sends them;
- the only way to stop it is the worker pressing 1 before the deadline, on the call placed to
  the worker's registered number; that stands the escalation down (nobody was notified yet)
  and the alert server records the alert as a false alarm cancelled by the worker;
- every failure of the call (invalid number, provider error, busy, no answer, voicemail, hung
  up, key 2 "I need help", the duress PIN) releases the hold at once: the chain is notified
  now, not at the deadline;
- SOS, discreet SOS, duress and session alerts are never verified (``should_verify``).

Pure dispatch: no ``alert_server`` import. The alert server hears about the worker's "I am
fine" through ``VerificationHooks`` (set on the ``Dispatcher``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import ColumnElement, Table, select, update
from sqlmodel import Session

from dispatch import store
from dispatch.messages import Lang
from dispatch.models import (
    ACTIVE,
    INFO_STEP,
    KIND_ALERT,
    KIND_VERIFY,
    PLANNED,
    PRIORITY_URGENT,
    VERIFY_CONFIRMED,
    VERIFY_ESCALATED,
    VERIFY_PENDING,
    Notification,
    Verification,
)
from dispatch.schemas import AlertBrief
from vigie.persistence import any_row, insert_ignore

log = logging.getLogger("dispatch.verification")

VERIF: Table = Verification.__table__  # type: ignore[attr-defined]
NOTIF = store.NOTIF
ESC = store.ESC

# Voluntary alarms are never verified: the worker pressed the button, and calling back a
# discreet SOS could give the worker away to the aggressor.
NEVER_VERIFIED = frozenset({"sos", "sos_silent", "session_overdue"})


class VerificationHooks(Protocol):
    """How the alert server hears that the worker said "I am fine" (key 1 in time)."""

    def on_worker_ok(self, session: Session, alert_id: str, at: datetime) -> None:
        """Inside dispatch's transaction: mark the alert a false alarm cancelled by the worker."""
        ...

    def after_worker_ok(self, alert_id: str, at: datetime) -> None:
        """After the commit: tell the device (``alert.cancelled``). Must not raise."""
        ...


def should_verify(brief: AlertBrief, *, kinds: tuple[str, ...], hold_s: float) -> bool:
    """Only automatic alarms, never under duress, only with a number to call."""
    if hold_s <= 0 or brief.duress or not brief.worker_phone:
        return False
    if brief.kind in NEVER_VERIFIED or "duress" in brief.flags:
        return False
    return brief.kind in kinds


def get(session: Session, alert_id: str) -> Verification | None:
    return session.get(Verification, alert_id, populate_existing=True)


def _shift_held(session: Session, alert_id: str, delta: timedelta, now: datetime) -> int:
    """Move every planned alert notification of ``alert_id`` by ``delta`` (never before now).

    A handful of rows per alert: done row by row so that the date arithmetic stays in Python
    (portable between SQLite and PostgreSQL).
    """
    rows = session.execute(
        select(NOTIF.c.id, NOTIF.c.due_at, NOTIF.c.next_action_at).where(
            NOTIF.c.alert_id == alert_id, NOTIF.c.kind == KIND_ALERT, NOTIF.c.status == PLANNED
        )
    ).all()
    for row_id, due_at, next_at in rows:
        session.execute(
            update(NOTIF)
            .where(NOTIF.c.id == row_id, NOTIF.c.status == PLANNED)
            .values(
                due_at=max(due_at + delta, now),
                next_action_at=max(next_at + delta, now),
                updated_at=now,
            )
        )
    esc_row = session.execute(select(ESC.c.exhausts_at).where(ESC.c.alert_id == alert_id)).first()
    if esc_row is not None:
        session.execute(
            update(ESC)
            .where(ESC.c.alert_id == alert_id)
            .values(exhausts_at=max(esc_row[0] + delta, now), updated_at=now)
        )
    return len(rows)


def start(session: Session, *, brief: AlertBrief, hold_s: float, now: datetime) -> bool:
    """Hold the freshly started escalation of ``brief`` and plan the call to the worker.

    Same transaction as ``lifecycle.start``. Idempotent per alert (primary key). Returns True
    when the verification was started.
    """
    assert brief.worker_phone is not None
    alert_id = brief.alert_id
    status = session.execute(select(ESC.c.status).where(ESC.c.alert_id == alert_id)).scalar()
    if status != ACTIVE:
        # No contact at all (exhausted at start) or already over: nothing to hold.
        return False
    deadline = now + timedelta(seconds=hold_s)
    inserted = insert_ignore(
        session,
        VERIF,
        [
            {
                "alert_id": alert_id,
                "phone": brief.worker_phone[:20],
                "status": VERIFY_PENDING,
                "started_at": now,
                "deadline_at": deadline,
                "hold_s": hold_s,
            }
        ],
    )
    if not inserted:
        return False
    first_due = session.execute(
        select(NOTIF.c.next_action_at)
        .where(NOTIF.c.alert_id == alert_id, NOTIF.c.kind == KIND_ALERT, NOTIF.c.status == PLANNED)
        .order_by(NOTIF.c.next_action_at)
        .limit(1)
    ).scalar()
    held = 0
    if first_due is not None and first_due < deadline:
        # The first step lands exactly on the deadline, the others keep their spacing.
        held = _shift_held(session, alert_id, deadline - first_due, now)
    insert_ignore(
        session,
        NOTIF,
        [
            {
                "alert_id": alert_id,
                "kind": KIND_VERIFY,
                "chain_index": -1,
                "step_no": INFO_STEP[KIND_VERIFY],
                "round_no": 0,
                "contact_id": 0,
                "contact_name": (brief.worker_first_name or "Travailleur")[:200],
                "phone": brief.worker_phone[:20],
                "channel": "voice",
                "status": PLANNED,
                "due_at": now,
                "next_action_at": now,
                "attempts": 0,
                "ack_code": None,
                "priority": PRIORITY_URGENT,  # never behind anything, never throttled
                "provider_rank": 0,
                "created_at": now,
                "updated_at": now,
            }
        ],
    )
    store.add_event(
        session,
        alert_id=alert_id,
        at=now,
        kind="verification_started",
        phone=brief.worker_phone,
        channel="voice",
        detail=f"appel de vérification à la personne ; {held} notification(s) retenue(s) "
        f"jusqu'à {deadline.isoformat()}",
    )
    store.alog(logging.WARNING, "automatic alarm: verifying with the worker", alert_id)
    return True


def release(session: Session, *, alert_id: str, now: datetime, reason: str) -> bool:
    """End a pending verification WITHOUT the worker's "I am fine": the chain goes now.

    Compare-and-set: the first caller wins (a failed call, a timeout and a key 2 arriving
    together release once). Returns True when held notifications were brought forward (the
    caller wakes the engine).
    """
    v = session.execute(
        select(VERIF.c.deadline_at).where(
            VERIF.c.alert_id == alert_id, VERIF.c.status == VERIFY_PENDING
        )
    ).first()
    if v is None:
        return False
    res = session.execute(
        update(VERIF)
        .where(VERIF.c.alert_id == alert_id, VERIF.c.status == VERIFY_PENDING)
        .values(status=VERIFY_ESCALATED, reason=reason[:32], ended_at=now)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return False
    deadline: datetime = v[0]
    moved = 0
    if deadline > now:
        moved = _shift_held(session, alert_id, now - deadline, now)
    store.add_event(
        session,
        alert_id=alert_id,
        at=now,
        kind="verification_escalated",
        status=reason[:20],
        detail=f"vérification sans réponse « tout va bien » ({reason}) : escalade immédiate, "
        f"{moved} notification(s) avancée(s)",
    )
    store.alog(logging.WARNING, "verification failed, escalating now", alert_id, reason=reason)
    return moved > 0


def any_expire_due(session: Session, *, now: datetime) -> bool:
    """Whether a pending verification is past its deadline (``expire_due`` has work): a
    read, which takes no lock."""
    return any_row(session, VERIF.c.alert_id, *_expire_due(now))


def _expire_due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (VERIF.c.status == VERIFY_PENDING, VERIF.c.deadline_at <= now)


def expire_due(session: Session, *, now: datetime) -> list[str]:
    """Pending verifications past their deadline: recorded as escalated (the held rows are
    due by then anyway, so this only closes the record)."""
    rows = session.execute(
        update(VERIF)
        .where(*_expire_due(now))
        .values(status=VERIFY_ESCALATED, reason="timeout", ended_at=now)
        .returning(VERIF.c.alert_id)
    ).all()
    ids = [r[0] for r in rows]
    for alert_id in ids:
        store.add_event(
            session,
            alert_id=alert_id,
            at=now,
            kind="verification_escalated",
            status="timeout",
            detail="pas de « tout va bien » dans le délai : escalade",
        )
    return ids


def record_digits(
    session: Session,
    *,
    notification: Notification,
    digits: str,
    now: datetime,
    on_committed: Callable[[], None] | None = None,
) -> str:
    """A key pressed on the verification call. Returns what happened (for the TwiML):
    ``confirmed``, ``help``, ``late``, ``other``.

    Never an acknowledgement: the worker cannot take her own alert in charge. On
    ``confirmed`` the caller (``callbacks.record_digits``) stands the escalation down.
    """
    n = notification
    key = digits.strip()[:1]
    if key not in ("1", "2"):
        return "other"
    session.execute(update(NOTIF).where(NOTIF.c.id == n.id).values(digits=key, updated_at=now))
    session.execute(
        update(VERIF).where(VERIF.c.alert_id == n.alert_id).values(digits=key)  # last key wins
    )
    if key == "2":
        if release(session, alert_id=n.alert_id, now=now, reason="worker_help") and on_committed:
            store.after_commit(session, on_committed)
        return "help"
    # Key 1 stands the alert down only while the chain is still held: after the deadline the
    # referents may already be on their way, and the worker's cancel PIN is the way to stop.
    res = session.execute(
        update(VERIF)
        .where(
            VERIF.c.alert_id == n.alert_id,
            VERIF.c.status == VERIFY_PENDING,
            VERIF.c.deadline_at > now,
        )
        .values(status=VERIFY_CONFIRMED, reason="worker_ok", ended_at=now)
    )
    esc_status = session.execute(select(ESC.c.status).where(ESC.c.alert_id == n.alert_id)).scalar()
    if res.rowcount != 1 or esc_status != ACTIVE:  # type: ignore[attr-defined]
        store.add_event(
            session,
            alert_id=n.alert_id,
            at=now,
            kind="verification_late",
            phone=n.phone,
            channel="voice",
            detail="touche 1 après l'escalade : l'alerte continue (code d'annulation requis)",
        )
        if res.rowcount == 1:  # type: ignore[attr-defined]
            # Confirmed on an escalation that is not active (acknowledged meanwhile): undo.
            session.execute(
                update(VERIF)
                .where(VERIF.c.alert_id == n.alert_id)
                .values(status=VERIFY_ESCALATED, reason="late")
            )
        return "late"
    store.add_event(
        session,
        alert_id=n.alert_id,
        at=now,
        kind="verification_confirmed",
        phone=n.phone,
        channel="voice",
        actor=n.contact_name,
        detail="la personne a confirmé que tout va bien (touche 1) : fausse alerte",
    )
    return "confirmed"


# --- what the worker hears ----------------------------------------------------------------

_WHAT: dict[str, dict[Lang, str]] = {
    "fall": {"fr": "une chute", "en": "a fall"},
    "no_motion": {"fr": "une immobilité prolongée", "en": "a long period without motion"},
}


def voice_text(kind: str, hold_s: float, lang: Lang = "fr") -> str:
    what = _WHAT.get(kind, {"fr": "une alarme", "en": "an alarm"})[lang]
    seconds = max(1, round(hold_s))
    if lang == "en":
        return (
            f"Vigie. Your device detected {what}. If you are fine, press 1: the alert will be "
            f"cancelled. If you need help, press 2. Without an answer within {seconds} seconds, "
            "your referents will be alerted."
        )
    return (
        f"Vigie. Votre balise a détecté {what}. Si tout va bien, appuyez sur 1 : l'alerte sera "
        f"annulée. Si vous avez besoin d'aide, appuyez sur 2. Sans réponse d'ici {seconds} "
        "secondes, vos référents seront alertés."
    )


def no_input_text(lang: Lang = "fr") -> str:
    return (
        "Aucune touche reçue. Vos référents sont alertés. Au revoir."
        if lang == "fr"
        else "No key received. Your referents are being alerted. Goodbye."
    )


def reply_text(outcome: str, lang: Lang = "fr") -> str:
    """What the worker hears after a key (or when the call connects too late)."""
    fr = {
        "confirmed": "Merci. L'alerte est annulée. Prenez soin de vous. Au revoir.",
        "help": "Vos référents sont alertés maintenant. Au revoir.",
        "late": "L'alerte a déjà été transmise à vos référents. Si tout va bien, annulez-la "
        "avec votre code sur la balise. Au revoir.",
        "over": "Cette alerte est terminée. Au revoir.",
    }
    en = {
        "confirmed": "Thank you. The alert is cancelled. Take care. Goodbye.",
        "help": "Your referents are being alerted now. Goodbye.",
        "late": "The alert has already been passed to your referents. If you are fine, "
        "cancel it with your code on the device. Goodbye.",
        "over": "This alert is over. Goodbye.",
    }
    table = fr if lang == "fr" else en
    return table.get(outcome, table["over"])
