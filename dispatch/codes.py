"""Acknowledgement codes per number: reserved when a chain is planned, released when the
escalation ends, never handed to the same number again for a week (docs/decisions).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, or_, select, update
from sqlmodel import Session

from dispatch.models import (
    ACK_CODE_MAX_DIGITS,
    ACK_CODE_MIN_DIGITS,
    OPEN_STATUSES,
)
from dispatch.store import CODES, ESC, alog
from vigie.persistence import dialect_name, insert_ignore, insert_ignore_statement

if TYPE_CHECKING:
    pass

# an escalation still open), so a late reply to an old alert cannot acknowledge a new one.
CODE_REUSE_AVOID = timedelta(days=7)
# Random candidates drawn per code length: with 90 % of the 3-digit codes of a number taken,
# a 3-digit one is still found 92 % of the time; otherwise the code is one digit longer.
CODE_CANDIDATES = 24
# Inserts lost to a concurrent start reserving the same code for the same number.
CODE_RACE_RETRIES = 20

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


def _taken(
    session: Session,
    *,
    phones: Sequence[str],
    candidates: Sequence[str],
    now: datetime,
    for_alert: str | None = None,
) -> set[tuple[str, str]]:
    """Of ``candidates``, the (phone, code) pairs of ``phones`` that cannot be given now:
    reserved by an open reservation, released less than ``CODE_REUSE_AVOID`` ago, or released
    by an escalation that is still open (exhausted: a late reply must still find it, and only
    it). The released codes of ``for_alert`` itself are not in the way: it may take them
    back. One query for every number of a chain."""
    if not candidates or not phones:
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
        select(CODES.c.phone, CODES.c.code).where(
            CODES.c.phone.in_(list(dict.fromkeys(phones))),
            CODES.c.code.in_(list(dict.fromkeys(candidates))),
            or_(CODES.c.released_at.is_(None), released_by_others),
        )
    )
    return {(phone, code) for phone, code in rows}


def _valid(prefer: Iterable[str]) -> list[str]:
    return [c for c in dict.fromkeys(prefer) if c and _CODE_RE.fullmatch(c)]


def _draw(digits: int) -> list[str]:
    low, high = 10 ** (digits - 1), 10**digits
    return [str(i) for i in _RANDOM.sample(range(low, high), CODE_CANDIDATES)]


def pick_code(
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
    prefer = _valid(prefer)
    for digits in range(ACK_CODE_MIN_DIGITS, ACK_CODE_MAX_DIGITS + 1):
        candidates = [*prefer, *_draw(digits)]
        taken = _taken(session, phones=[phone], candidates=candidates, now=now, for_alert=for_alert)
        for code in candidates:
            if (phone, code) not in taken:
                return code
        prefer = []  # checked once is enough
    return None


def reserve_codes(
    session: Session,
    *,
    alert_id: str,
    phones: Iterable[str],
    preferred: str | None,
    now: datetime,
) -> dict[str, str | None]:
    """Reserve a code per phone: ``preferred`` where it is free, another one otherwise.
    ``preferred`` None: the first number's code, drawn here, is the one the others prefer
    (a new escalation's main code, without a query of its own).

    A phone that already had a code for this alert keeps it (a chain added later); one whose
    code was released by this alert (exhausted, then a new chain) gets it back if still free.
    The partial unique index (phone, code) among open reservations is the real guard: a
    concurrent start that picked the same code for the same phone loses the insert and picks
    again. A phone that cannot get a code maps to None: its SMS go out without one (the text
    then says to use the link or the call). Never raises for want of a code.
    """
    mine = session.execute(
        select(CODES.c.phone, CODES.c.code, CODES.c.released_at)
        .where(CODES.c.alert_id == alert_id)
        .order_by(CODES.c.id)
    ).all()
    existing = {phone: code for phone, code, released in mine if released is None}
    released_before = {phone: code for phone, code, released in mine if released is not None}
    todo = [phone for phone in dict.fromkeys(phones) if phone not in existing]
    # Every number at once first: one query for what is taken among the preferred codes and
    # one draw of shortest codes, one insert (a chain is 3-4 numbers, planned at every alert;
    # one query and one insert per number was most of starting an escalation).
    won, lost, prefer = _reserve_at_once(
        session, alert_id=alert_id, phones=todo, released=released_before,
        preferred=preferred, now=now,
    )  # fmt: skip
    for phone in todo:
        if phone in won:
            continue
        # No free short code among the draws, or a concurrent start took it first: this
        # number alone, length by length, a few times.
        won[phone] = _reserve_one(
            session,
            alert_id=alert_id,
            phone=phone,
            prefer=[] if phone in lost else prefer[phone],
            now=now,
        )
    return {phone: existing.get(phone) or won.get(phone) for phone in dict.fromkeys(phones)}


def _reserve_at_once(
    session: Session,
    *,
    alert_id: str,
    phones: list[str],
    released: dict[str, str],
    preferred: str | None,
    now: datetime,
) -> tuple[dict[str, str | None], set[str], dict[str, list[str]]]:
    """One round for every number: its first free code among its preferred ones (the code
    this alert released for it, then ``preferred``) and one shared draw of shortest codes.
    Returns the codes reserved (a number left without one is not there), the numbers whose
    insert a concurrent start beat, and each number's preferred codes, for the numbers left
    to ``_reserve_one``."""
    won: dict[str, str | None] = {}
    lost: set[str] = set()
    prefer: dict[str, list[str]] = {}
    if not phones:
        return won, lost, prefer
    drawn = _draw(ACK_CODE_MIN_DIGITS)
    candidates = [*released.values(), *([preferred] if preferred else []), *drawn]
    taken = _taken(session, phones=phones, candidates=candidates, now=now, for_alert=alert_id)
    picked: dict[str, str] = {}
    main = preferred
    for phone in phones:
        prefer[phone] = _valid(c for c in (released.get(phone), main) if c)
        free = next((c for c in [*prefer[phone], *drawn] if (phone, c) not in taken), None)
        if free is not None:
            picked[phone] = free
        if main is None:
            # The first number's code: the others have it where it is free for them.
            main = free or ""
    if not picked:
        return won, lost, prefer
    rows = [
        {"alert_id": alert_id, "phone": phone, "code": code, "created_at": now}
        for phone, code in picked.items()
    ]
    # The partial unique index (phone, code) among open reservations decides a race: the
    # rows it turned away are not returned.
    insert = insert_ignore_statement(dialect_name(session), CODES, returning="phone")
    inserted = set(session.execute(insert, rows).scalars())
    for phone, code in picked.items():
        if phone in inserted:
            won[phone] = code
        else:
            lost.add(phone)
    return won, lost, prefer


def _reserve_one(
    session: Session, *, alert_id: str, phone: str, prefer: list[str], now: datetime
) -> str | None:
    code: str | None = None
    for _ in range(CODE_RACE_RETRIES):
        candidate = pick_code(session, phone=phone, now=now, prefer=prefer, for_alert=alert_id)
        if candidate is None:
            break
        row = {"alert_id": alert_id, "phone": phone, "code": candidate, "created_at": now}
        if insert_ignore(session, CODES, [row]):
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
    return code


def release_codes(session: Session, alert_id: str, now: datetime) -> None:
    """The escalation ended (any reason): its reservations stop holding the unique slots.

    The rows stay: a late reply with the code still finds this alert, because a released code
    is not given again to that number while the escalation is open or for CODE_REUSE_AVOID.
    """
    session.execute(
        update(CODES)
        .where(CODES.c.alert_id == alert_id, CODES.c.released_at.is_(None))
        .values(released_at=now)
    )
