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
from vigie.persistence import insert_ignore

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


def reserve_codes(
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
        codes[phone] = code
    return codes


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
