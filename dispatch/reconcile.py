"""Reconciliation after a crash: before sending again a row a dead server left ``sending``,
ask the provider whether it accepted it (docs/decisions/0004). A duplicate is the accepted
failure for a life-safety alert; a lost message is not.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, func, or_, select, update
from sqlmodel import Session

from dispatch import callbacks, store
from dispatch.channels.base import (
    Notifier,
    Reconciles,
    SendResult,
)
from dispatch.models import (
    CLAIMED,
    SENDING,
    SENT,
    Notification,
)
from dispatch.store import EVENTS, NOTIF, alog
from vigie.persistence import take_write_lock

log = logging.getLogger("dispatch")

# What a claim of a row left ``sending`` says (error_message): the row may be a duplicate.
TAKEOVER_MARK = "lease expired while sending: possible duplicate"
# Provider and server clocks differ: what the provider accepted this long before a row's
# ``sending_at`` still counts as a candidate for that row.
RECONCILE_SKEW_S = 5.0


def reconcile(
    engine: Engine, notifier: Notifier, *, n: Notification, now: datetime, lease_s: float
) -> bool:
    """Before sending again a row a dead server left ``sending``: did the provider accept
    it? True if it did and the row (with the other rows of its group) is now recorded.

    The group is every row to the same number and channel (and, for an SMS, the same text)
    left ``sending`` by a dead server. The provider's list gives what it accepted for that
    number since then that no row holds; those are matched to the group in time order,
    but only when there are exactly as many as rows (every send of the group went
    through) and none of them may be the request of a send outside the group whose SID is
    not stored yet (in flight here or on a live server, or crashed in another window):
    one created after that send began. Otherwise which row went through cannot be told (a
    call speaks its own row's alert): the group is sent again, a duplicate rather than a
    loss, those provider messages are set aside so that no later decision adopts them, and
    the decision is kept on every row of the group (``sending_at`` cleared), so that no
    row of it decides again once the group's new sends are in the provider's list.
    Decided under a lock per number, so that two rows of one group never decide apart.
    """
    if not isinstance(notifier, Reconciles) or n.sending_at is None:
        return False
    finder = notifier.find_accepted
    sending_at = n.sending_at if n.sending_at.tzinfo else n.sending_at.replace(tzinfo=UTC)
    skew = timedelta(seconds=RECONCILE_SKEW_S)
    lease = timedelta(seconds=lease_s)
    since = sending_at - lease - skew
    # A send started after this may still be in flight on a live server: not a candidate.
    http_s = float(notifier.http_timeout_s)
    newest = now - timedelta(seconds=http_s) - skew
    sms = n.channel == "sms"
    try:
        found: list[tuple[SendResult, datetime]] = finder(
            channel=n.channel,
            to=n.phone,
            body_sha256=n.body_sha256 if sms else None,
            since=since - skew,
        )
    except Exception as exc:
        alog(logging.WARNING, "reconcile lookup failed", n.alert_id, notification=n.id)
        log.warning("reconcile lookup failed, sending again: %s", exc)
        return False
    candidates = [(r, at) for r, at in found if at <= newest]
    if not candidates:
        return False
    crashed = or_(
        NOTIF.c.status == SENDING,
        and_(NOTIF.c.status == CLAIMED, NOTIF.c.error_message == TAKEOVER_MARK),
    )
    with Session(engine, expire_on_commit=False) as s:
        take_write_lock(s)
        if s.get_bind().dialect.name == "postgresql":
            key = int.from_bytes(hashlib.sha256(n.phone.encode()).digest()[:8], "big", signed=True)
            s.execute(select(func.pg_advisory_xact_lock(key)))
        # Every row to this number whose send may have reached the provider, SID not stored.
        unrecorded = [
            NOTIF.c.phone == n.phone,
            NOTIF.c.channel == n.channel,
            NOTIF.c.provider_sid.is_(None),
            crashed,
        ]
        if sms:
            unrecorded.append(NOTIF.c.body_sha256 == n.body_sha256)
        q = select(NOTIF.c.id, NOTIF.c.alert_id, NOTIF.c.sending_at).where(
            *unrecorded,
            NOTIF.c.sending_at >= since,
            NOTIF.c.sending_at <= now - lease,
        )
        group = sorted(s.execute(q).all(), key=lambda r: (r.sending_at, r.id))
        group_ids = [r.id for r in group]
        if n.id not in group_ids:
            s.rollback()
            return False
        sids = [r.sid for r, _ in candidates]
        held = set(
            s.execute(select(NOTIF.c.provider_sid).where(NOTIF.c.provider_sid.in_(sids)))
            .scalars()
            .all()
        ) | set(
            s.execute(
                select(EVENTS.c.detail).where(
                    EVENTS.c.kind == "reconcile_ambiguous",
                    EVENTS.c.phone == n.phone,
                    EVENTS.c.detail.in_(sids),
                )
            )
            .scalars()
            .all()
        )
        free = sorted((c for c in candidates if c[0].sid not in held), key=lambda c: c[1])
        if not free:
            s.rollback()
            return False
        # A send outside the group whose SID is not stored may own what the provider
        # created after it began (the `newest` cut-off cannot tell: a live server may store
        # its SID later than the HTTP time-out, and `now` may run ahead of the provider).
        began = [
            at if at.tzinfo else at.replace(tzinfo=UTC)
            for at in s.execute(
                select(NOTIF.c.sending_at).where(
                    *unrecorded,
                    NOTIF.c.id.not_in(group_ids),
                    NOTIF.c.sending_at.is_not(None),
                )
            ).scalars()
        ]
        contested = any(at >= min(began) - skew for _, at in free) if began else False
        if len(free) != len(group) or contested:
            s.execute(
                update(NOTIF)
                .where(NOTIF.c.id.in_(group_ids), NOTIF.c.provider_sid.is_(None), crashed)
                .values(sending_at=None)
            )
            for result, _ in free:
                store.add_event(
                    s,
                    alert_id=n.alert_id,
                    at=now,
                    kind="reconcile_ambiguous",
                    notification_id=n.id,
                    channel=n.channel,
                    phone=n.phone,
                    detail=result.sid,
                )
            s.commit()
            alog(
                logging.WARNING,
                "accepted before a crash, but for which row cannot be told: sent again",
                n.alert_id,
                notification=n.id,
                rows=len(group),
                accepted=len(free),
                contested=contested,
            )
            return False
        rank_map = callbacks.SMS_RANK if sms else callbacks.CALL_RANK
        for row, (result, created) in zip(group, free, strict=True):
            s.execute(
                update(NOTIF)
                .where(NOTIF.c.id == row.id, NOTIF.c.provider_sid.is_(None), crashed)
                .values(
                    status=SENT,
                    provider_sid=result.sid[:64],
                    provider_status=result.status[:20],
                    provider_rank=rank_map.get(result.status, 1),
                    sent_at=created,
                    lease_until=None,
                    claim_token=None,
                    updated_at=now,
                )
            )
            store.add_event(
                s,
                alert_id=row.alert_id,
                at=now,
                kind="reconciled",
                notification_id=row.id,
                channel=n.channel,
                phone=n.phone,
                detail=result.sid,
            )
            callbacks.replay_unmatched(s, sid=result.sid, now=now)
            alog(
                logging.WARNING,
                "accepted before a crash: recorded, not sent again",
                row.alert_id,
                notification=row.id,
                sid=result.sid,
            )
        s.commit()
    return True
