"""Reads for the dashboard and the clock: the timeline, the view, the next due time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlmodel import Session

from dispatch.models import (
    ACTIVE,
    CLAIMED,
    EXHAUSTED,
    FAILED,
    KIND_ACK_INFO,
    KIND_ALERT,
    KIND_DURESS,
    KIND_STAND_DOWN,
    PLANNED,
    SENDING,
    SENT,
    Escalation,
    Event,
    Inbound,
    Notification,
)
from dispatch.schemas import EscalationView, TimelineEntry
from dispatch.store import ESC, NOTIF

if TYPE_CHECKING:
    pass

# --- reads for the dashboard ----------------------------------------------------------------

_WHAT = {
    (KIND_ALERT, "sms"): "alert_sms",
    (KIND_ALERT, "voice"): "alert_call",
    (KIND_ACK_INFO, "sms"): "ack_info_sms",
    (KIND_STAND_DOWN, "sms"): "stand_down_sms",
    (KIND_DURESS, "sms"): "duress_sms",
}


def timeline(session: Session, *, alert_id: str) -> list[TimelineEntry]:
    """Every notification (planned, sent, failed, cancelled), every event, every reply."""
    entries: list[TimelineEntry] = []
    for n in session.execute(
        select(Notification).where(Notification.alert_id == alert_id)  # type: ignore[arg-type]
    ).scalars():
        at = n.sent_at or n.finished_at or n.next_action_at
        status = n.provider_status if n.status == SENT and n.provider_status else n.status
        if n.status == FAILED and n.provider_status:
            status = n.provider_status
        error = f"{n.error_code}: {n.error_message}" if n.error_code else None
        entries.append(
            TimelineEntry(
                at=at,
                what=_WHAT.get((n.kind, n.channel), f"{n.kind}_{n.channel}"),
                to_name=n.contact_name,
                to_phone=n.phone,
                channel=n.channel,
                status=status,
                provider_sid=n.provider_sid,
                error=error,
                detail=f"étape {n.step_no + 1}, passage {n.round_no + 1}"
                if n.kind == KIND_ALERT
                else None,
                notification_id=n.id,
            )
        )
    for e in session.execute(
        select(Event).where(Event.alert_id == alert_id)  # type: ignore[arg-type]
    ).scalars():
        what = "delivery" if e.kind == "provider_status" else e.kind
        entries.append(
            TimelineEntry(
                at=e.at,
                what=what,
                to_name=e.actor,
                to_phone=e.phone,
                channel=e.channel,
                status=e.status,
                detail=e.detail,
                notification_id=e.notification_id,
            )
        )
    for i in session.execute(
        select(Inbound).where(Inbound.alert_id == alert_id)  # type: ignore[arg-type]
    ).scalars():
        entries.append(
            TimelineEntry(
                at=i.received_at,
                what="inbound_sms",
                to_phone=i.from_phone,
                channel="sms",
                status=i.outcome,
                provider_sid=i.provider_sid,
                detail=i.body[:200],
            )
        )
    entries.sort(key=lambda e: (e.at, e.notification_id or 0))
    return entries


def view(session: Session, *, alert_id: str) -> EscalationView | None:
    esc = session.get(Escalation, alert_id, populate_existing=True)
    if esc is None:
        return None
    next_at = session.execute(
        select(func.min(NOTIF.c.next_action_at)).where(
            NOTIF.c.alert_id == alert_id, NOTIF.c.status == PLANNED
        )
    ).scalar()
    return EscalationView(
        alert_id=alert_id,
        status=esc.status,
        ack_code=esc.ack_code,
        duress=esc.duress,
        started_at=esc.started_at,
        acked_at=esc.acked_at,
        acked_by_name=esc.acked_by_name,
        acked_by_phone=esc.acked_by_phone,
        acked_via=esc.acked_via,
        exhausted_at=esc.exhausted_at,
        next_action_at=next_at,
    )


def list_escalations(session: Session, *, statuses: Sequence[str] = (EXHAUSTED,)) -> list[str]:
    """alert_ids by status, e.g. the exhausted ones the dashboard must show loudly."""
    return list(
        session.execute(
            select(ESC.c.alert_id)
            .where(ESC.c.status.in_(list(statuses)))
            .order_by(ESC.c.started_at)
        ).scalars()
    )


def next_due_at(session: Session, *, now: datetime) -> datetime | None:
    """The nearest time the engine has something to do (for the clock's one-shot wake-up).

    Exhaustion times already past are left out: such an escalation still waits on a retry,
    whose own time is counted, and counting them would make the clock spin.
    """
    planned = session.execute(
        select(func.min(NOTIF.c.next_action_at)).where(NOTIF.c.status == PLANNED)
    ).scalar()
    leases = session.execute(
        select(func.min(NOTIF.c.lease_until)).where(NOTIF.c.status.in_([CLAIMED, SENDING]))
    ).scalar()
    exhaust = session.execute(
        select(func.min(ESC.c.exhausts_at)).where(ESC.c.status == ACTIVE, ESC.c.exhausts_at > now)
    ).scalar()
    times = [t for t in (planned, leases, exhaust) if t is not None]
    return min(times) if times else None
