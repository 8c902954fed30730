"""The life of an escalation in the caller's transaction: start, add a chain, acknowledge,
stand down, duress, close, exhaust, and the pull-forward when a contact is not reached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlmodel import Session

from dispatch import verification
from dispatch.codes import release_codes, reserve_codes
from dispatch.hooks import DispatchHooks
from dispatch.models import (
    ACKNOWLEDGED,
    ACTIVE,
    CANCELLED,
    CLAIMED,
    CLOSED,
    EXHAUSTED,
    INFO_STEP,
    KIND_ACK_INFO,
    KIND_ALERT,
    KIND_DURESS,
    KIND_STAND_DOWN,
    OPEN_STATUSES,
    PLANNED,
    SENDING,
    SENT,
    STOOD_DOWN,
    ChainRow,
    ContactRow,
    Escalation,
    Notification,
    priority_of,
)
from dispatch.policy import EscalationPolicy, plan, total_length_s
from dispatch.schemas import AckResult, AlertBrief, Chain
from dispatch.store import ESC, NOTIF, add_event, after_commit, alog, brief_to_json
from vigie.persistence import any_row, insert_ignore, take_write_lock

if TYPE_CHECKING:
    pass

# --- start and chains -----------------------------------------------------------------------


def _plan_chain(
    session: Session,
    *,
    alert_id: str,
    chain_index: int,
    chain: Chain,
    policy: EscalationPolicy,
    starts_at: datetime,
    main_code: str | None,
    now: datetime,
    seen: set[tuple[str, int, int, str, datetime]],
) -> tuple[int, dict[str, str | None]]:
    """Write a chain, its contacts and all its planned notifications. Returns the count and
    each number's code (``main_code`` None: the chain's first number's code is the main one,
    ``reserve_codes``)."""
    session.add(
        ChainRow(
            alert_id=alert_id,
            chain_index=chain_index,
            departement=chain.departement,
            force=chain.force,
            starts_at=starts_at,
        )
    )
    contacts: list[ContactRow] = []
    for position, person in enumerate(chain.contacts, start=1):
        row = ContactRow(
            alert_id=alert_id,
            chain_index=chain_index,
            position=position,
            name=person.name,
            phone=person.phone,
        )
        session.add(row)
        contacts.append(row)
    session.flush()  # contact ids
    codes = reserve_codes(
        session,
        alert_id=alert_id,
        phones=[c.phone for c in contacts],
        preferred=main_code,
        now=now,
    )
    rows: list[dict[str, Any]] = []
    for item in plan(policy, len(contacts)):
        contact = contacts[item.position - 1]
        due = starts_at + timedelta(seconds=item.offset_s)
        # The national fallback ends every chain: on an ambiguous border it would otherwise get
        # the same message twice at the same instant, once per chain.
        key = (contact.phone, item.round_no, item.step_no, item.channel, due)
        if key in seen:
            continue
        seen.add(key)
        assert contact.id is not None
        rows.append(
            {
                "alert_id": alert_id,
                "kind": KIND_ALERT,
                "chain_index": chain_index,
                "step_no": item.step_no,
                "round_no": item.round_no,
                "contact_id": contact.id,
                "contact_name": contact.name,
                "phone": contact.phone,
                "channel": item.channel,
                "status": PLANNED,
                "due_at": due,
                "next_action_at": due,
                "attempts": 0,
                "ack_code": codes[contact.phone],
                "priority": priority_of(KIND_ALERT, item.round_no),
                "provider_rank": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
    if rows:
        session.execute(NOTIF.insert(), rows)
    return len(rows), codes


def _existing_plan_keys(
    session: Session, alert_id: str
) -> set[tuple[str, int, int, str, datetime]]:
    rows = session.execute(
        select(
            NOTIF.c.phone, NOTIF.c.round_no, NOTIF.c.step_no, NOTIF.c.channel, NOTIF.c.due_at
        ).where(NOTIF.c.alert_id == alert_id, NOTIF.c.kind == KIND_ALERT)
    ).all()
    return {(r[0], r[1], r[2], r[3], r[4]) for r in rows}


def start(
    session: Session,
    *,
    brief: AlertBrief,
    chains: Sequence[Chain],
    policy: EscalationPolicy,
    now: datetime,
) -> bool:
    """Create the escalation and plan every notification. Idempotent per alert_id.

    Returns False when the escalation already existed (a repeat of the alert): nothing changes.
    """
    alert_id = brief.alert_id
    created_at = brief.created_at
    # The primary key makes a second start (even a concurrent one on another server) a no-op.
    inserted = insert_ignore(
        session,
        ESC,
        [
            {
                "alert_id": alert_id,
                "status": ACTIVE,
                "alert_created_at": created_at,
                "started_at": now,
                "exhausts_at": created_at + timedelta(seconds=total_length_s(policy)),
                "ack_code": "000",
                "duress": brief.duress,
                "duress_at": now if brief.duress else None,
                "brief": brief_to_json(brief),
                "policy": policy.model_dump_json(),
                "updated_at": now,
            }
        ],
    )
    if not inserted:
        alog(logging.INFO, "escalation already started", alert_id)
        return False
    # The first contact's code (drawn with the first chain's codes); every other number gets
    # the same one where it is free.
    main_code: str | None = None
    seen: set[tuple[str, int, int, str, datetime]] = set()
    planned = 0
    for chain_index, chain in enumerate(chains):
        count, codes = _plan_chain(
            session,
            alert_id=alert_id,
            chain_index=chain_index,
            chain=chain,
            policy=policy,
            starts_at=created_at,
            main_code=main_code,
            now=now,
            seen=seen,
        )
        planned += count
        if main_code is None and chain.contacts:
            main_code = codes[chain.contacts[0].phone] or ""
    main_code = main_code or ""
    values: dict[str, Any] = {"ack_code": main_code}
    if planned == 0:
        # Nobody to call is a configuration fault, not a reason to drop the alert: it stays
        # open and loudly exhausted for the dashboard.
        values.update(status=EXHAUSTED, exhausted_at=now)
        alog(logging.CRITICAL, "escalation has NO contact to notify", alert_id)
    session.execute(update(ESC).where(ESC.c.alert_id == alert_id).values(**values))
    add_event(
        session,
        alert_id=alert_id,
        at=now,
        kind="started",
        detail=f"{len(chains)} chaîne(s), {planned} notification(s) prévues, "
        f"code {main_code or 'aucun'}",
    )
    alog(logging.INFO, "escalation started", alert_id, chains=len(chains), planned=planned)
    return True


def add_chain(session: Session, *, alert_id: str, chain: Chain, now: datetime) -> bool:
    """Add a chain to a running escalation (a moving alert entered another département).

    Chains are only ever added. The new chain starts at step 0 now: its contacts have not been
    told anything yet, and firing all its past-due steps at once would be a burst of calls.
    Returns False if the alert is not open or the same chain is already worked.
    """
    take_write_lock(session)
    esc = session.get(Escalation, alert_id)
    if esc is None or esc.status not in OPEN_STATUSES:
        return False
    existing = session.execute(
        select(ChainRow).where(ChainRow.alert_id == alert_id)  # type: ignore[arg-type]
    ).scalars()
    chains = list(existing)
    for row in chains:
        phones = session.execute(
            select(ContactRow.phone)  # type: ignore[call-overload]
            .where(ContactRow.alert_id == alert_id, ContactRow.chain_index == row.chain_index)
            .order_by(ContactRow.position)
        ).scalars()
        if (
            row.departement == chain.departement
            and row.force == chain.force
            and tuple(phones) == tuple(c.phone for c in chain.contacts)
        ):
            return False
    policy = EscalationPolicy.model_validate_json(esc.policy)
    planned, _codes = _plan_chain(
        session,
        alert_id=alert_id,
        chain_index=max((c.chain_index for c in chains), default=-1) + 1,
        chain=chain,
        policy=policy,
        starts_at=now,
        main_code=esc.ack_code,
        now=now,
        seen=_existing_plan_keys(session, alert_id),
    )
    exhausts_at = max(esc.exhausts_at, now + timedelta(seconds=total_length_s(policy)))
    values: dict[str, Any] = {"exhausts_at": exhausts_at, "updated_at": now}
    if esc.status == EXHAUSTED and planned:
        # New people to reach: the escalation runs again.
        values.update(status=ACTIVE, exhausted_at=None)
    session.execute(
        update(ESC)
        .where(ESC.c.alert_id == alert_id, ESC.c.status.in_(OPEN_STATUSES))
        .values(**values)
    )
    add_event(
        session,
        alert_id=alert_id,
        at=now,
        kind="chain_added",
        detail=f"département {chain.departement} {chain.force or ''}: {planned} notification(s)",
    )
    alog(logging.INFO, "chain added", alert_id, departement=chain.departement, planned=planned)
    return True


def update_brief(session: Session, *, brief: AlertBrief, now: datetime) -> bool:
    """Replace what later messages say (a fresher position, a commune). Not the timing."""
    take_write_lock(session)
    res = session.execute(
        update(ESC)
        .where(ESC.c.alert_id == brief.alert_id)
        .values(brief=brief_to_json(brief), updated_at=now)
    )
    return bool(res.rowcount)  # type: ignore[attr-defined]


# --- telling the people already notified --------------------------------------------------


def _notified(session: Session, alert_id: str) -> list[tuple[str, int, str, str | None]]:
    """(phone, contact_id, name, code) of every number that was (or may have been) reached."""
    rows = session.execute(
        select(
            NOTIF.c.phone,
            func.min(NOTIF.c.contact_id),
            func.min(NOTIF.c.contact_name),
            func.min(NOTIF.c.ack_code),
        )
        .where(
            NOTIF.c.alert_id == alert_id,
            NOTIF.c.kind == KIND_ALERT,
            or_(NOTIF.c.provider_sid.is_not(None), NOTIF.c.status.in_([SENDING, SENT])),
        )
        .group_by(NOTIF.c.phone)
    ).all()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def _tell_notified(session: Session, *, alert_id: str, kind: str, now: datetime) -> int:
    rows = [
        {
            "alert_id": alert_id,
            "kind": kind,
            "chain_index": -1,
            "step_no": INFO_STEP[kind],
            "round_no": 0,
            "contact_id": contact_id,
            "contact_name": name,
            "phone": phone,
            "channel": "sms",
            "status": PLANNED,
            "due_at": now,
            "next_action_at": now,
            "attempts": 0,
            "ack_code": code,
            "priority": priority_of(kind, 0),
            "provider_rank": 0,
            "created_at": now,
            "updated_at": now,
        }
        for phone, contact_id, name, code in _notified(session, alert_id)
    ]
    # The unique key (alert, step, contact, channel, round) makes a second call a no-op.
    return insert_ignore(session, NOTIF, rows)


def _cancel_pending(session: Session, alert_id: str, kinds: Sequence[str], now: datetime) -> int:
    """Cancel what was not handed to the provider yet (planned, or claimed but not sending).

    A claimed row is safe to cancel: the engine re-checks its claim (status and token) in a
    compare-and-set before calling the provider, so a cancelled row is never sent.
    """
    res = session.execute(
        update(NOTIF)
        .where(
            NOTIF.c.alert_id == alert_id,
            NOTIF.c.kind.in_(list(kinds)),
            NOTIF.c.status.in_([PLANNED, CLAIMED]),
        )
        .values(status=CANCELLED, finished_at=now, updated_at=now, lease_until=None)
    )
    return int(res.rowcount)  # type: ignore[attr-defined]


# --- acknowledgement, stand-down, duress, close ------------------------------------------


def _result_for(session: Session, alert_id: str) -> AckResult:
    esc = session.get(Escalation, alert_id, populate_existing=True)
    if esc is None:
        return AckResult(alert_id=alert_id, accepted=False, status="unknown")
    return AckResult(
        alert_id=alert_id,
        accepted=False,
        status=esc.status,
        by_name=esc.acked_by_name,
        by_phone=esc.acked_by_phone,
        via=esc.acked_via,
        at=esc.acked_at,
    )


def acknowledge(
    session: Session,
    *,
    alert_id: str,
    by_name: str,
    by_phone: str | None,
    via: str,
    now: datetime,
    hooks: DispatchHooks,
    on_committed: Callable[[], None] | None = None,
) -> AckResult:
    """The first acknowledgement wins (compare-and-set on the escalation's status).

    In the same transaction: pending notifications are cancelled, everyone already notified is
    queued an SMS saying who took the alert, and the alert server's hook updates its alert row.
    """
    # The CAS is the very first statement: it takes the row lock (SQLite: the write lock), so
    # two simultaneous acknowledgements serialise here and exactly one sees rowcount 1.
    res = session.execute(
        update(ESC)
        .where(ESC.c.alert_id == alert_id, ESC.c.status.in_(OPEN_STATUSES))
        .values(
            status=ACKNOWLEDGED,
            acked_at=now,
            acked_by_name=by_name[:200],
            acked_by_phone=by_phone,
            acked_via=via[:16],
            ended_at=now,
            end_reason=f"acknowledged via {via}",
            updated_at=now,
        )
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        result = _result_for(session, alert_id)
        alog(logging.INFO, "acknowledgement refused", alert_id, via=via, status=result.status)
        return result
    cancelled = _cancel_pending(session, alert_id, [KIND_ALERT, KIND_DURESS], now)
    told = _tell_notified(session, alert_id=alert_id, kind=KIND_ACK_INFO, now=now)
    release_codes(session, alert_id, now)
    add_event(
        session,
        alert_id=alert_id,
        at=now,
        kind="acknowledged",
        actor=by_name,
        phone=by_phone,
        channel=via[:16],
        detail=f"{cancelled} notification(s) annulée(s), {told} contact(s) prévenu(s)",
    )
    hooks.on_acknowledged(session, alert_id, by_name, by_phone, via, now)

    def _after() -> None:
        hooks.after_acknowledged(alert_id, by_name, by_phone, via, now)
        hooks.after_change(alert_id)
        if on_committed:
            on_committed()

    after_commit(session, _after)
    alog(logging.WARNING, "alert acknowledged", alert_id, by=by_name, via=via, told=told)
    return AckResult(
        alert_id=alert_id,
        accepted=True,
        status=ACKNOWLEDGED,
        by_name=by_name,
        by_phone=by_phone,
        via=via,
        at=now,
    )


def stand_down(
    session: Session,
    *,
    alert_id: str,
    now: datetime,
    reason: str,
    hooks: DispatchHooks,
    on_committed: Callable[[], None] | None = None,
) -> bool:
    """Cancel PIN: stop the escalation and tell everyone notified that the alert is cancelled.

    Also after an acknowledgement: the responder on the way must learn it is called off.
    """
    res = session.execute(
        update(ESC)
        .where(ESC.c.alert_id == alert_id, ESC.c.status.in_([*OPEN_STATUSES, ACKNOWLEDGED]))
        .values(status=STOOD_DOWN, ended_at=now, end_reason=reason[:200], updated_at=now)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return False
    _cancel_pending(session, alert_id, [KIND_ALERT, KIND_DURESS], now)
    told = _tell_notified(session, alert_id=alert_id, kind=KIND_STAND_DOWN, now=now)
    release_codes(session, alert_id, now)
    add_event(session, alert_id=alert_id, at=now, kind="stood_down", detail=f"{reason} ({told})")
    alog(logging.WARNING, "alert stood down", alert_id, reason=reason, told=told)

    def _after() -> None:
        hooks.after_change(alert_id)
        if on_committed:
            on_committed()

    after_commit(session, _after)
    return True


def mark_duress(
    session: Session,
    *,
    alert_id: str,
    now: datetime,
    hooks: DispatchHooks,
    on_committed: Callable[[], None] | None = None,
) -> bool:
    """Duress PIN: the escalation goes on; everyone notified so far is told now, and every
    later message says "contrainte" (messages are built at send time from this flag)."""
    res = session.execute(
        update(ESC)
        .where(
            ESC.c.alert_id == alert_id,
            ESC.c.duress.is_(False),
            ESC.c.status.in_([*OPEN_STATUSES, ACKNOWLEDGED]),
        )
        .values(duress=True, duress_at=now, updated_at=now)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return False
    told = _tell_notified(session, alert_id=alert_id, kind=KIND_DURESS, now=now)
    add_event(session, alert_id=alert_id, at=now, kind="duress", detail=f"{told} contact(s)")
    # An automatic alarm still being verified: the duress PIN ends the verification, the
    # chain is notified now (and the worker's phone is not called).
    verification.release(session, alert_id=alert_id, now=now, reason="duress")
    alog(logging.CRITICAL, "worker under duress", alert_id, told=told)

    def _after() -> None:
        hooks.after_change(alert_id)
        if on_committed:
            on_committed()

    after_commit(session, _after)
    return True


def close(session: Session, *, alert_id: str, now: datetime, hooks: DispatchHooks) -> bool:
    """The alert is resolved: stop everything, silently (nothing more is sent)."""
    res = session.execute(
        update(ESC)
        .where(ESC.c.alert_id == alert_id, ESC.c.status != CLOSED)
        .values(status=CLOSED, ended_at=func.coalesce(ESC.c.ended_at, now), updated_at=now)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return False
    _cancel_pending(
        session, alert_id, [KIND_ALERT, KIND_DURESS, KIND_ACK_INFO, KIND_STAND_DOWN], now
    )
    release_codes(session, alert_id, now)
    add_event(session, alert_id=alert_id, at=now, kind="closed")
    alog(logging.INFO, "escalation closed", alert_id)
    after_commit(session, lambda: hooks.after_change(alert_id))
    return True


# --- exhaustion ---------------------------------------------------------------------------


def _exhaust_due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (ESC.c.status == ACTIVE, ESC.c.exhausts_at <= now)


def any_exhaust_due(session: Session, *, now: datetime) -> bool:
    """Whether an active escalation's last pass is over (``exhaust_due`` may have work): a
    read, which takes no lock."""
    return any_row(session, ESC.c.alert_id, *_exhaust_due(now))


def exhaust_due(session: Session, *, now: datetime, hooks: DispatchHooks) -> list[str]:
    """Active escalations whose last pass is over and nothing is left to send → exhausted."""
    pending = (
        select(NOTIF.c.id)
        .where(
            NOTIF.c.alert_id == ESC.c.alert_id,
            NOTIF.c.kind == KIND_ALERT,
            NOTIF.c.status.in_([PLANNED, CLAIMED, SENDING]),
        )
        .exists()
    )
    rows = session.execute(
        update(ESC)
        .where(*_exhaust_due(now), ~pending)
        .values(status=EXHAUSTED, exhausted_at=now, updated_at=now)
        .returning(ESC.c.alert_id)
    ).all()
    ids = [r[0] for r in rows]
    for alert_id in ids:
        # Its codes stop holding slots (still answerable: see ``release_codes``).
        release_codes(session, alert_id, now)
        add_event(session, alert_id=alert_id, at=now, kind="exhausted")
        # Loud on purpose: nobody answered the whole chain, national fallback included.
        alog(logging.CRITICAL, "escalation EXHAUSTED, alert still unacknowledged", alert_id)
        hooks.on_exhausted(session, alert_id, now)

    def _after() -> None:
        for alert_id in ids:
            hooks.after_exhausted(alert_id, now)
            hooks.after_change(alert_id)

    if ids:
        after_commit(session, _after)
    return ids


# --- failures move on at once --------------------------------------------------------------


def pull_forward(session: Session, *, notification: Notification, now: datetime) -> bool:
    """A contact could not be reached on this channel: bring the chain's next step to now.

    Nothing is sent twice: only ``planned`` rows move, and only their time changes. Skipped
    while anyone else in the same step may still be reached (an untried channel, a contact who
    got the message): the step is only over when all of it failed.
    """
    n = notification
    if n.kind != KIND_ALERT:
        return False
    # Lock the escalation row: two channels failing at the same instant (two servers, two
    # threads) would otherwise each see the other as still alive and neither move on. With the
    # lock the second one sees the first's failure. (SQLite: already one writer at a time.)
    status = session.execute(
        select(ESC.c.status).where(ESC.c.alert_id == n.alert_id).with_for_update()
    ).scalar()
    if status != ACTIVE:
        return False
    # Someone else in this step (another channel, another contact) may still be reached:
    # then the step is not over, and the next one keeps its time.
    unanswered_call = and_(
        NOTIF.c.channel == "voice",
        NOTIF.c.provider_status == "completed",
        func.coalesce(NOTIF.c.digits, "") != "1",
    )
    alive = session.execute(
        select(func.count())
        .select_from(NOTIF)
        .where(
            NOTIF.c.alert_id == n.alert_id,
            NOTIF.c.kind == KIND_ALERT,
            NOTIF.c.chain_index == n.chain_index,
            NOTIF.c.round_no == n.round_no,
            NOTIF.c.step_no == n.step_no,
            NOTIF.c.id != n.id,
            or_(
                NOTIF.c.status.in_([PLANNED, CLAIMED, SENDING]),
                and_(NOTIF.c.status == SENT, ~unanswered_call),
            ),
        )
    ).scalar_one()
    if alive:
        return False
    next_at = session.execute(
        select(func.min(NOTIF.c.next_action_at)).where(
            NOTIF.c.alert_id == n.alert_id,
            NOTIF.c.kind == KIND_ALERT,
            NOTIF.c.chain_index == n.chain_index,
            NOTIF.c.status == PLANNED,
            NOTIF.c.next_action_at > now,
        )
    ).scalar()
    if next_at is None:
        return False
    moved = session.execute(
        update(NOTIF)
        .where(
            NOTIF.c.alert_id == n.alert_id,
            NOTIF.c.kind == KIND_ALERT,
            NOTIF.c.chain_index == n.chain_index,
            NOTIF.c.status == PLANNED,
            NOTIF.c.next_action_at > now,
            NOTIF.c.next_action_at <= next_at,
        )
        .values(next_action_at=now, updated_at=now)
    ).rowcount  # type: ignore[attr-defined]
    add_event(
        session,
        alert_id=n.alert_id,
        at=now,
        kind="pulled_forward",
        notification_id=n.id,
        phone=n.phone,
        channel=n.channel,
        detail=f"{moved} notification(s) avancée(s) (prévues à {next_at.isoformat()})",
    )
    alog(logging.WARNING, "next step pulled forward", n.alert_id, after=n.id, moved=moved)
    return bool(moved)
