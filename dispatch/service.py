"""Reads and state changes of escalations: session first, keyword-only, ``now`` a parameter.

Nothing here commits: the caller's transaction owns the change (the alert server can start an
escalation in the transaction that stores the alert). Work that must only happen once the
change is durable (publishing to the device, waking the clock) is queued with
``after_commit`` and dropped on rollback.

SQLite note: in WAL mode a transaction that read and then writes fails at once with
"database is locked" if another connection wrote in between (the busy timeout cannot help).
Every function here that reads before it writes first calls ``lock_for_write``, which takes
SQLite's write lock up front (waiting with the busy timeout). PostgreSQL needs nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, and_, event, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from dispatch.hooks import DispatchHooks
from dispatch.models import (
    ACK_CODE_MAX_DIGITS,
    ACK_CODE_MIN_DIGITS,
    ACKNOWLEDGED,
    ACTIVE,
    CANCELLED,
    CLAIMED,
    CLOSED,
    EXHAUSTED,
    FAILED,
    INFO_STEP,
    KIND_ACK_INFO,
    KIND_ALERT,
    KIND_DURESS,
    KIND_STAND_DOWN,
    KIND_VERIFY,
    OPEN_STATUSES,
    PLANNED,
    PRIORITY_URGENT,
    SENDING,
    SENT,
    STOOD_DOWN,
    AckCode,
    ChainRow,
    ContactRow,
    Escalation,
    Event,
    Inbound,
    Notification,
    priority_of,
)
from dispatch.policy import EscalationPolicy, plan, total_length_s
from dispatch.schemas import AckResult, AlertBrief, Chain, EscalationView, TimelineEntry

if TYPE_CHECKING:
    from dispatch.verification import VerificationHooks

log = logging.getLogger("dispatch")

ESC: Table = Escalation.__table__  # type: ignore[attr-defined]
NOTIF: Table = Notification.__table__  # type: ignore[attr-defined]
CODES: Table = AckCode.__table__  # type: ignore[attr-defined]
EVENTS: Table = Event.__table__  # type: ignore[attr-defined]
INBOUND: Table = Inbound.__table__  # type: ignore[attr-defined]

# A code released for a number less than this long ago is not given to it again (nor one of
# an escalation still open), so a late reply to an old alert cannot acknowledge a new one.
CODE_REUSE_AVOID = timedelta(days=7)
# Random candidates drawn per code length: with 90 % of the 3-digit codes of a number taken,
# a 3-digit one is still found 92 % of the time; otherwise the code is one digit longer.
CODE_CANDIDATES = 24
# Inserts lost to a concurrent start reserving the same code for the same number.
CODE_RACE_RETRIES = 20

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


def alog(level: int, msg: str, alert_id: str | None, **fields: Any) -> None:
    """Structured log line: ``alert_id`` always present, as a field and in the text."""
    tail = " ".join(f"{k}={v}" for k, v in fields.items())
    log.log(
        level,
        f"{msg} alert_id={alert_id} {tail}".rstrip(),
        # The fields as keys too, for JSON log lines (alert_server/logging_setup.py).
        extra={"alert_id": alert_id, "vigie_fields": fields},
    )


# --- transaction helpers --------------------------------------------------------------------

_AFTER_KEY = "dispatch.after_commit"
_LISTENING_KEY = "dispatch.listening"


def after_commit(session: Session, fn: Callable[[], None]) -> None:
    """Run ``fn`` once the session's transaction has committed (never if it rolls back)."""
    if not session.info.get(_LISTENING_KEY):
        session.info[_LISTENING_KEY] = True
        event.listen(session, "after_commit", _run_after_commit)
        event.listen(session, "after_rollback", _drop_after_commit)
    session.info.setdefault(_AFTER_KEY, []).append(fn)


def _run_after_commit(session: Session) -> None:
    queue: list[Callable[[], None]] = session.info.pop(_AFTER_KEY, [])
    for fn in queue:
        try:
            fn()
        except Exception:  # a hook must never undo or block a committed safety change
            log.exception("after-commit hook failed")


def _drop_after_commit(session: Session) -> None:
    session.info.pop(_AFTER_KEY, None)


def is_sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def lock_for_write(session: Session) -> None:
    """On SQLite, take the write lock now (see the module docstring). No-op elsewhere."""
    if is_sqlite(session):
        session.execute(text("UPDATE dispatch_escalation SET status = status WHERE 1 = 0"))


def _insert_ignore(session: Session, table: Table, rows: list[dict[str, Any]]) -> int:
    """INSERT … ON CONFLICT DO NOTHING; returns how many rows were inserted."""
    if not rows:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        stmt: Any = postgresql.insert(table).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    # RETURNING rather than rowcount: psycopg reports -1 for some INSERTs.
    stmt = stmt.returning(*table.primary_key.columns)
    inserted = 0
    for row in rows:
        inserted += len(session.execute(stmt.values(**row)).all())
    return inserted


def _event(
    session: Session,
    *,
    alert_id: str,
    at: datetime,
    kind: str,
    notification_id: int | None = None,
    channel: str | None = None,
    phone: str | None = None,
    actor: str | None = None,
    status: str | None = None,
    detail: str | None = None,
) -> None:
    session.execute(
        EVENTS.insert().values(
            alert_id=alert_id,
            at=at,
            kind=kind,
            notification_id=notification_id,
            channel=channel,
            phone=phone,
            actor=actor[:200] if actor else None,
            status=status,
            detail=detail[:500] if detail else None,
        )
    )


# --- (de)serialisation of what the messages need ------------------------------------------


def brief_to_json(brief: AlertBrief) -> str:
    data = dataclasses.asdict(brief)
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = value.isoformat()
    data["flags"] = list(brief.flags)
    return json.dumps(data, ensure_ascii=False)


def brief_from_json(raw: str) -> AlertBrief:
    data = json.loads(raw)
    for key in ("created_at", "position_at"):
        if data.get(key):
            data[key] = datetime.fromisoformat(data[key])
    data["flags"] = tuple(data.get("flags") or ())
    names = {f.name for f in dataclasses.fields(AlertBrief)}
    return AlertBrief(**{k: v for k, v in data.items() if k in names})


# --- ack codes ----------------------------------------------------------------------------
#
# A number replies "OK 482" to take an alert. Each number holds one code per open escalation
# it is in; the national fallback is in every chain, so it may hold thousands. Codes are
# 3 digits while one is free for that number, then 4, 5, 6 digits (about a million per number
# in all): allocation can never hold an escalation. A code is picked by drawing a few random
# candidates and asking the database which of them are taken (one indexed query per length),
# never by listing every code of the number.


_RANDOM = secrets.SystemRandom()
_CODE_RE = re.compile(rf"[1-9][0-9]{{{ACK_CODE_MIN_DIGITS - 1},{ACK_CODE_MAX_DIGITS - 1}}}")


def _taken_codes(
    session: Session,
    *,
    phone: str,
    candidates: Sequence[str],
    now: datetime,
    for_alert: str | None = None,
) -> set[str]:
    """Of ``candidates``, the codes ``phone`` cannot be given now: reserved by an open
    reservation, released less than ``CODE_REUSE_AVOID`` ago, or released by an escalation that
    is still open (exhausted: a late reply must still find it, and only it). The released
    codes of ``for_alert`` itself are not in the way: it may take them back."""
    if not candidates:
        return set()
    still_open = (
        select(ESC.c.alert_id)
        .where(ESC.c.alert_id == CODES.c.alert_id, ESC.c.status.in_(OPEN_STATUSES))
        .exists()
    )
    released_by_others = or_(
        CODES.c.released_at >= now - CODE_REUSE_AVOID,
        still_open,
    )
    if for_alert is not None:
        released_by_others = and_(CODES.c.alert_id != for_alert, released_by_others)
    rows = session.execute(
        select(CODES.c.code).where(
            CODES.c.phone == phone,
            CODES.c.code.in_(list(candidates)),
            or_(CODES.c.released_at.is_(None), released_by_others),
        )
    ).scalars()
    return set(rows)


def _pick_code(
    session: Session,
    *,
    phone: str,
    now: datetime,
    prefer: Sequence[str] = (),
    for_alert: str | None = None,
) -> str | None:
    """A code ``phone`` can be given: one of ``prefer`` if free, else a random one of the
    shortest length that has a free one among ``CODE_CANDIDATES`` draws. None only if every
    length failed (practically never); the caller then sends without a code."""
    prefer = [c for c in dict.fromkeys(prefer) if c and _CODE_RE.fullmatch(c)]
    for digits in range(ACK_CODE_MIN_DIGITS, ACK_CODE_MAX_DIGITS + 1):
        low, high = 10 ** (digits - 1), 10**digits
        drawn = [str(i) for i in _RANDOM.sample(range(low, high), CODE_CANDIDATES)]
        candidates = [*prefer, *drawn]
        taken = _taken_codes(
            session, phone=phone, candidates=candidates, now=now, for_alert=for_alert
        )
        for code in candidates:
            if code not in taken:
                return code
        prefer = []  # checked once is enough
    return None


def _reserve_codes(
    session: Session, *, alert_id: str, phones: Iterable[str], preferred: str, now: datetime
) -> dict[str, str | None]:
    """Reserve a code per phone: ``preferred`` where it is free, another one otherwise.

    A phone that already had a code for this alert keeps it (a chain added later); one whose
    code was released by this alert (exhausted, then a new chain) gets it back if still free.
    The partial unique index (phone, code) among open reservations is the real guard: a
    concurrent start that picked the same code for the same phone loses the insert and picks
    again. A phone that cannot get a code maps to None: its SMS go out without one (the text
    then says to use the link or the call). Never raises for want of a code.
    """
    codes: dict[str, str | None] = {}
    mine = session.execute(
        select(CODES.c.phone, CODES.c.code, CODES.c.released_at)
        .where(CODES.c.alert_id == alert_id)
        .order_by(CODES.c.id)
    ).all()
    existing = {phone: code for phone, code, released in mine if released is None}
    released_before = {phone: code for phone, code, released in mine if released is not None}
    for phone in dict.fromkeys(phones):
        if phone in existing:
            codes[phone] = existing[phone]
            continue
        prefer = [c for c in (released_before.get(phone), preferred) if c]
        code: str | None = None
        for _ in range(CODE_RACE_RETRIES):
            candidate = _pick_code(session, phone=phone, now=now, prefer=prefer, for_alert=alert_id)
            if candidate is None:
                break
            row = {"alert_id": alert_id, "phone": phone, "code": candidate, "created_at": now}
            if _insert_ignore(session, CODES, [row]):
                code = candidate
                break
            prefer = []  # lost a race for it: another one
        if code is None:
            alog(
                logging.ERROR,
                "no acknowledgement code for this number: its SMS go out without one",
                alert_id,
                phone=phone,
            )
        codes[phone] = code
    return codes


def _release_codes(session: Session, alert_id: str, now: datetime) -> None:
    """The escalation ended (any reason): its reservations stop holding the unique slots.

    The rows stay: a late reply with the code still finds this alert, because a released code
    is not given again to that number while the escalation is open or for CODE_REUSE_AVOID.
    """
    session.execute(
        update(CODES)
        .where(CODES.c.alert_id == alert_id, CODES.c.released_at.is_(None))
        .values(released_at=now)
    )


# --- start and chains -----------------------------------------------------------------------


def _plan_chain(
    session: Session,
    *,
    alert_id: str,
    chain_index: int,
    chain: Chain,
    policy: EscalationPolicy,
    starts_at: datetime,
    main_code: str,
    now: datetime,
    seen: set[tuple[str, int, int, str, datetime]],
) -> int:
    """Write a chain, its contacts and all its planned notifications. Returns the count."""
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
    codes = _reserve_codes(
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
    return len(rows)


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
    inserted = _insert_ignore(
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
    # The first contact's code; every other number gets the same one where it is free.
    first = next((c.phone for chain in chains for c in chain.contacts), None)
    main_code = (_pick_code(session, phone=first, now=now) if first else None) or ""
    seen: set[tuple[str, int, int, str, datetime]] = set()
    planned = 0
    for chain_index, chain in enumerate(chains):
        planned += _plan_chain(
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
    values: dict[str, Any] = {"ack_code": main_code}
    if planned == 0:
        # Nobody to call is a configuration fault, not a reason to drop the alert: it stays
        # open and loudly exhausted for the dashboard.
        values.update(status=EXHAUSTED, exhausted_at=now)
        alog(logging.CRITICAL, "escalation has NO contact to notify", alert_id)
    session.execute(update(ESC).where(ESC.c.alert_id == alert_id).values(**values))
    _event(
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
    lock_for_write(session)
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
    planned = _plan_chain(
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
    _event(
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
    lock_for_write(session)
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
    return _insert_ignore(session, NOTIF, rows)


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
    _release_codes(session, alert_id, now)
    _event(
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
    _release_codes(session, alert_id, now)
    _event(session, alert_id=alert_id, at=now, kind="stood_down", detail=f"{reason} ({told})")
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
    _event(session, alert_id=alert_id, at=now, kind="duress", detail=f"{told} contact(s)")
    # An automatic alarm still being verified: the duress PIN ends the verification, the
    # chain is notified now (and the worker's phone is not called).
    from dispatch import verification

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
    _release_codes(session, alert_id, now)
    _event(session, alert_id=alert_id, at=now, kind="closed")
    alog(logging.INFO, "escalation closed", alert_id)
    after_commit(session, lambda: hooks.after_change(alert_id))
    return True


# --- exhaustion ---------------------------------------------------------------------------


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
        .where(ESC.c.status == ACTIVE, ESC.c.exhausts_at <= now, ~pending)
        .values(status=EXHAUSTED, exhausted_at=now, updated_at=now)
        .returning(ESC.c.alert_id)
    ).all()
    ids = [r[0] for r in rows]
    for alert_id in ids:
        # Its codes stop holding slots (still answerable: see ``_release_codes``).
        _release_codes(session, alert_id, now)
        _event(session, alert_id=alert_id, at=now, kind="exhausted")
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
    _event(
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
        _event(
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
    _event(
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
            from dispatch import verification

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
    lock_for_write(session)
    n = session.get(Notification, notification_id)
    if n is None:
        return None
    _event(
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
        from dispatch import verification

        verification.record_digits(
            session,
            notification=n,
            digits=digits,
            now=now,
            hooks=hooks,
            listener=verify_hooks,
            on_committed=on_committed,
        )
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


# --- inbound SMS ------------------------------------------------------------------------------

_ACK_RE = re.compile(rf"(?:OK)?([0-9]{{{ACK_CODE_MIN_DIGITS},{ACK_CODE_MAX_DIGITS}}})")


def parse_ack(body: str) -> tuple[str, str | None]:
    """("code", "482") for "OK 482", "ok482", " 4 8 2 ", "OK 4821"; ("ok", None) for a bare
    "OK". A code is 3 to 6 digits, as issued (``_pick_code``)."""
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
    lock_for_write(session)
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
        _event(
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
            _event(
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


# --- throttling of the lower classes ------------------------------------------------------
#
# A number at its limit (``per_number_max`` sends in ``window``) gets its throttled messages
# on slots ``window / per_number_max`` apart, each behind those already waiting: a message is
# deferred once and claimed again only at its slot (not re-claimed and deferred every tick).
# The urgent class is never asked (see ``models.priority_of``).


def advisory_lock(session: Session, name: str) -> None:
    """PostgreSQL: a transaction-scoped lock on ``name`` (decisions about one number taken one
    at a time across servers). SQLite: ``lock_for_write`` already serialises every writer."""
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
