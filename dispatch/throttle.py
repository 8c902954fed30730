"""Throttling of the lower classes (information SMS); life-safety sends are never asked
(``models.priority_of``).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select, update
from sqlmodel import Session

from dispatch.models import (
    PLANNED,
    PRIORITY_URGENT,
)
from dispatch.store import NOTIF

if TYPE_CHECKING:
    pass

# --- throttling of the lower classes ------------------------------------------------------
#
# A number at its limit (``per_number_max`` sends in ``window``) gets its throttled messages
# on slots ``window / per_number_max`` apart, each behind those already waiting: a message is
# deferred once and claimed again only at its slot (not re-claimed and deferred every tick).
# The urgent class is never asked (see ``models.priority_of``).


def advisory_lock(session: Session, name: str) -> None:
    """PostgreSQL: a transaction-scoped lock on ``name`` (decisions about one number taken one
    at a time across servers). SQLite: ``take_write_lock`` already serialises every writer."""
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        session.execute(select(func.pg_advisory_xact_lock(key)))


def number_free_at(
    session: Session, *, phone: str, now: datetime, per_number_max: int, window: timedelta
) -> datetime | None:
    """None if ``phone`` is under its limit now, else when its window frees.

    A send counts if it is younger than the window minus half a slot: messages sent on their
    slots a little late (the tick's jitter) then never push the next one out of line.
    """
    per_number_max = max(1, per_number_max)
    grace = window / per_number_max / 2
    rows = (
        session.execute(
            select(NOTIF.c.sent_at)
            .where(NOTIF.c.phone == phone, NOTIF.c.sent_at > now - window + grace)
            .order_by(NOTIF.c.sent_at.desc())
            .limit(per_number_max)
        )
        .scalars()
        .all()
    )
    if len(rows) < per_number_max:
        return None
    return rows[-1] + window - grace


def throttle_slot(
    session: Session,
    *,
    phone: str,
    priority: int,
    free_at: datetime,
    spacing: timedelta,
    now: datetime,
) -> datetime:
    """The slot of a throttled message to ``phone``: once the number is free, and behind the
    messages of its class (or a more urgent one) already waiting for that number."""
    last = session.execute(
        select(func.max(NOTIF.c.next_action_at)).where(
            NOTIF.c.phone == phone,
            NOTIF.c.status == PLANNED,
            NOTIF.c.priority > PRIORITY_URGENT,
            NOTIF.c.priority <= priority,
            NOTIF.c.next_action_at > now,
        )
    ).scalar()
    return free_at if last is None else max(free_at, last + spacing)


def line_up_due(
    session: Session,
    *,
    phone: str,
    after: datetime,
    spacing: timedelta,
    now: datetime,
    limit: int = 1000,
) -> int:
    """Every other throttled message to ``phone`` already due goes on the following slots
    (by class, then due time) rather than being claimed and deferred one by one. Rows claimed
    meanwhile (another server) are left alone. Returns how many were moved."""
    ids = (
        session.execute(
            select(NOTIF.c.id)
            .where(
                NOTIF.c.phone == phone,
                NOTIF.c.status == PLANNED,
                NOTIF.c.priority > PRIORITY_URGENT,
                NOTIF.c.next_action_at <= now,
            )
            .order_by(NOTIF.c.priority, NOTIF.c.next_action_at, NOTIF.c.id)
            .limit(limit)
        )
        .scalars()
        .all()
    )
    moved = 0
    for i, notification_id in enumerate(ids, start=1):
        res = session.execute(
            update(NOTIF)
            .where(
                NOTIF.c.id == notification_id,
                NOTIF.c.status == PLANNED,
                NOTIF.c.next_action_at <= now,
            )
            .values(next_action_at=after + i * spacing, updated_at=now)
        )
        moved += int(res.rowcount)  # type: ignore[attr-defined]
    return moved


def recent_sends(session: Session, *, phone: str, since: datetime) -> int:
    return int(
        session.execute(
            select(func.count())
            .select_from(NOTIF)
            .where(NOTIF.c.phone == phone, NOTIF.c.sent_at >= since)
        ).scalar_one()
    )
