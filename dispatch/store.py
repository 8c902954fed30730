"""Storage primitives every dispatch module shares: the tables, the timeline event, the
after-commit queue, SQLite's write lock and the (de)serialised alert brief.

Nothing here commits: the caller's transaction owns the change (the alert server can start an
escalation in the transaction that stores the alert). Work that must only happen once the
change is durable (publishing to the device, waking the clock) is queued with
``after_commit`` and dropped on rollback.

SQLite note: in WAL mode a transaction that read and then writes fails at once with
"database is locked" if another connection wrote in between (the busy timeout cannot help).
Every function that reads before it writes first calls ``vigie.persistence.take_write_lock``,
which takes SQLite's write lock up front (waiting with the busy timeout). PostgreSQL needs
nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, event
from sqlmodel import Session

from dispatch.models import (
    AckCode,
    Escalation,
    Event,
    Inbound,
    Notification,
)
from dispatch.schemas import AlertBrief

if TYPE_CHECKING:
    pass

log = logging.getLogger("dispatch")

ESC: Table = Escalation.__table__  # type: ignore[attr-defined]
NOTIF: Table = Notification.__table__  # type: ignore[attr-defined]
CODES: Table = AckCode.__table__  # type: ignore[attr-defined]
EVENTS: Table = Event.__table__  # type: ignore[attr-defined]
INBOUND: Table = Inbound.__table__  # type: ignore[attr-defined]


# A code released for a number less than this long ago is not given to it again (nor one of
def alog(level: int, msg: str, alert_id: str | None, **fields: Any) -> None:
    """Structured log line: ``alert_id`` always present, as a field and in the text."""
    tail = " ".join(f"{k}={v}" for k, v in fields.items())
    log.log(level, f"{msg} alert_id={alert_id} {tail}".rstrip(), extra={"alert_id": alert_id})


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


def add_event(
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
