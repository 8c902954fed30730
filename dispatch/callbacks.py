"""Provider callbacks: delivery statuses (ranked, never backwards, replayed when they beat our
own write of the SID) and the keys pressed during a call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlmodel import Session

from dispatch import verification
from dispatch.hooks import DispatchHooks
from dispatch.lifecycle import acknowledge, pull_forward, stand_down
from dispatch.models import (
    FAILED,
    KIND_VERIFY,
    Escalation,
    Notification,
)
from dispatch.schemas import AckResult
from dispatch.store import EVENTS, NOTIF, add_event, after_commit, alog, log
from vigie.persistence import take_write_lock

if TYPE_CHECKING:
    from dispatch.verification import VerificationHooks

# Provider statuses, ranked: a callback only moves a notification forward (duplicated and
# out-of-order callbacks are harmless). Final statuses share the top rank: the first one wins.
SMS_RANK = {
    "accepted": 1, "queued": 1, "scheduled": 1, "sending": 2, "sent": 3,
    "delivered": 5, "undelivered": 5, "failed": 5, "canceled": 5, "read": 6,
}  # fmt: skip
CALL_RANK = {
    "queued": 1, "initiated": 2, "ringing": 3, "in-progress": 4, "answered": 4,
    "completed": 5, "busy": 5, "no-answer": 5, "canceled": 5, "failed": 5,
}  # fmt: skip
# These mean the person was not reached: move on to the next channel or contact at once.
FAILURE_STATUSES = frozenset({"failed", "undelivered", "busy", "no-answer", "canceled"})

# --- provider callbacks ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusOutcome:
    applied: bool
    alert_id: str | None = None
    pulled_forward: bool = False


def record_status(
    session: Session,
    *,
    sid: str,
    status: str,
    error_code: str | None,
    error_message: str | None,
    now: datetime,
) -> StatusOutcome:
    """Apply a provider status callback. Never moves a status backwards; duplicates no-op."""
    n = session.execute(
        select(Notification).where(Notification.provider_sid == sid)  # type: ignore[arg-type]
    ).scalar_one_or_none()
    if n is None:
        # The callback may beat our own write of the SID: keep it, it is replayed then.
        add_event(
            session,
            alert_id="?",
            at=now,
            kind="status_unmatched",
            status=status[:20],
            detail=json.dumps({"sid": sid, "code": error_code, "msg": error_message})[:500],
        )
        log.info("status callback for an unknown sid=%s status=%s", sid, status)
        return StatusOutcome(applied=False)
    ranks = SMS_RANK if n.channel == "sms" else CALL_RANK
    rank = ranks.get(status)
    if rank is None:
        return StatusOutcome(applied=False, alert_id=n.alert_id)
    final_failure = status in FAILURE_STATUSES
    # Voice "completed" without the digit 1: a voicemail, an IVR, or someone who hung up.
    # Twilio counts it as completed; we count it as "not reached".
    unanswered = n.channel == "voice" and status == "completed" and n.digits != "1"
    values: dict[str, Any] = {
        "provider_status": status,
        "provider_rank": rank,
        "updated_at": now,
    }
    if error_code:
        values.update(error_code=error_code[:16], error_message=(error_message or "")[:500])
    if final_failure:
        values.update(status=FAILED, finished_at=now)
    elif rank >= 5:
        values.update(finished_at=now)
    # Compare-and-set on the rank: a concurrent duplicate applies once.
    res = session.execute(
        update(NOTIF).where(NOTIF.c.id == n.id, NOTIF.c.provider_rank < rank).values(**values)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return StatusOutcome(applied=False, alert_id=n.alert_id)
    add_event(
        session,
        alert_id=n.alert_id,
        at=now,
        kind="provider_status",
        notification_id=n.id,
        channel=n.channel,
        phone=n.phone,
        status=status,
        detail=f"{error_code} {error_message or ''}".strip() if error_code else None,
    )
    pulled = False
    if final_failure or unanswered:
        alog(logging.WARNING, "contact not reached", n.alert_id, phone=n.phone, status=status)
        if n.kind == KIND_VERIFY:
            # The worker did not say "I am fine" on the verification call: chain now.
            pulled = verification.release(session, alert_id=n.alert_id, now=now, reason=status)
        else:
            pulled = pull_forward(session, notification=n, now=now)
    return StatusOutcome(applied=True, alert_id=n.alert_id, pulled_forward=pulled)


def replay_unmatched(session: Session, *, sid: str, now: datetime) -> bool:
    """Apply status callbacks that arrived before the SID was stored. Returns pulled-forward."""
    rows = session.execute(
        select(EVENTS.c.id, EVENTS.c.status, EVENTS.c.detail)
        .where(
            EVENTS.c.kind == "status_unmatched",
            EVENTS.c.alert_id == "?",
            EVENTS.c.detail.like(f'{{"sid": "{sid}"%'),
        )
        .order_by(EVENTS.c.id)
    ).all()
    pulled = False
    for event_id, status, detail in rows:
        data = json.loads(detail)
        out = record_status(
            session,
            sid=sid,
            status=status,
            error_code=data.get("code"),
            error_message=data.get("msg"),
            now=now,
        )
        pulled = pulled or out.pulled_forward
        session.execute(
            update(EVENTS).where(EVENTS.c.id == event_id).values(kind="status_replayed")
        )
    return pulled


# --- voice --------------------------------------------------------------------------------


def load_for_send(session: Session, notification_id: int) -> tuple[Notification, Escalation] | None:
    n = session.get(Notification, notification_id)
    if n is None:
        return None
    esc = session.get(Escalation, n.alert_id)
    if esc is None:
        return None
    return n, esc


def record_digits(
    session: Session,
    *,
    notification_id: int,
    digits: str,
    now: datetime,
    hooks: DispatchHooks,
    on_committed: Callable[[], None] | None = None,
    verify_hooks: VerificationHooks | None = None,
) -> AckResult | None:
    """A key pressed during a call. Only 1 acknowledges; returns None for other keys.

    On a verification call (the worker's own phone) a key NEVER acknowledges: it is handed to
    ``dispatch.verification`` (1: I am fine, 2: I need help) and None is returned.
    """
    take_write_lock(session)
    n = session.get(Notification, notification_id)
    if n is None:
        return None
    add_event(
        session,
        alert_id=n.alert_id,
        at=now,
        kind="digits",
        notification_id=n.id,
        channel="voice",
        phone=n.phone,
        detail=digits[:8],
    )
    if n.kind == KIND_VERIFY:
        outcome = verification.record_digits(
            session, notification=n, digits=digits, now=now, on_committed=on_committed
        )
        if outcome == "confirmed":
            stand_down(
                session,
                alert_id=n.alert_id,
                now=now,
                reason="vérification : la personne va bien (touche 1)",
                hooks=hooks,
                on_committed=on_committed,
            )
            if verify_hooks is not None:
                listener = verify_hooks
                alert_id = n.alert_id
                listener.on_worker_ok(session, alert_id, now)
                after_commit(session, lambda: listener.after_worker_ok(alert_id, now))
            alog(logging.WARNING, "automatic alarm stood down by the worker", alert_id)
        return None
    if digits.strip() != "1":
        return None
    session.execute(update(NOTIF).where(NOTIF.c.id == n.id).values(digits="1", updated_at=now))
    return acknowledge(
        session,
        alert_id=n.alert_id,
        by_name=n.contact_name,
        by_phone=n.phone,
        via="voice",
        now=now,
        hooks=hooks,
        on_committed=on_committed,
    )
