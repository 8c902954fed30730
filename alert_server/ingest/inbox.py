"""The alert inbox: an alert message kept as it came, committed before its receipt.

Why: a press must be durable before the device hears ``alert.received`` and the broker gets
its PUBACK (protocol.md, "Ack after commit"), but it need not wait for everything the server
decides about it (its device, its incident, its rows and events). When the writer takes only
a few alerts at once (a press, not a flood), it first commits each message's bytes here in a
one-row transaction, answers the device and the broker, and only then stores the alert in a
second transaction that also deletes its inbox row. Nothing is lost between the two: the row
outlives a crash and is stored by the next writer to start, or by any other server's writer
once it is older than ``ORPHAN_AFTER`` (a server that died for good).

Each row is stored once: the transaction that stores an alert first deletes its inbox row,
and stores nothing if the row is already gone (another writer had it). On PostgreSQL a second
writer's delete waits for the first one's transaction and then finds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Column, Connection, LargeBinary, Text, bindparam, delete, insert, select
from sqlmodel import Field, Session, SQLModel

from vigie.persistence import Prepared, connection_of
from vigie.timeutil import as_utc

# A row this old is no writer's work in progress: its writer died (a crash, a server removed
# for good). Any writer stores it then; its own writer, alive but slower, then finds it gone.
ORPHAN_AFTER = timedelta(seconds=30)


class AlertInbox(SQLModel, table=True):
    """One alert message committed, not yet stored as an alert (normally for a millisecond)."""

    __tablename__ = "alert_inbox"

    id: int | None = Field(default=None, primary_key=True)
    # The device id as its topic gives it (the receipt goes back on that topic), unchecked.
    device_id: str = Field(sa_column=Column(Text, nullable=False))
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    received_at: datetime  # when the message reached the server


_t = AlertInbox.__table__  # type: ignore[attr-defined]
_ADD = Prepared(insert(_t).returning(_t.c.id))
_TAKE = Prepared(delete(_t).where(_t.c.id == bindparam("i")).returning(_t.c.id))


@dataclass(frozen=True, slots=True)
class Kept:
    id: int
    device_id: str
    payload: bytes
    received_at: datetime


def add(conn: Connection, device_id: str, payload: bytes, received_at: datetime) -> int:
    """Keep one message (in the caller's transaction); its row's id."""
    found = _ADD.first(
        conn, {"device_id": device_id, "payload": payload, "received_at": received_at}
    )
    assert found is not None
    return int(found[0])


def take(db: Session | Connection, inbox_id: int) -> bool:
    """Delete the row ``inbox_id`` in the caller's transaction: True if it was there (the
    caller stores its alert, in this same transaction), False if another writer had it."""
    return bool(_TAKE.rows(connection_of(db), {"i": inbox_id}))


def waiting(db: Session | Connection, *, before: datetime | None, limit: int) -> list[Kept]:
    """The oldest rows still here (received before ``before``, or any), oldest first."""
    stmt = select(_t.c.id, _t.c.device_id, _t.c.payload, _t.c.received_at).order_by(_t.c.id)
    if before is not None:
        stmt = stmt.where(_t.c.received_at < before)
    rows = connection_of(db).execute(stmt.limit(limit)).all()
    return [Kept(i, d, bytes(p), as_utc(r)) for i, d, p, r in rows]
