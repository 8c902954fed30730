"""The list of devices and their workers, read for ``vigie devices list``.

Why not through the models: importing them brings SQLModel and SQLAlchemy's ORM (a fifth of a
second of a command that answers in half a second), for one query. Here the columns of the
two tables are reflected from the database itself (``vigie.persistence.reflected_columns``: a
few milliseconds), so their names and types are the migrated schema's, never a second copy of
it written by hand, and the rows are read through a plain SQLAlchemy connection.
``tests/test_cli_devices.py`` checks that this reads what the models write.

One thing reflection cannot know: the models' times go through SQLModel's ``UTCDateTime``,
which hands them back in UTC with their offset (SQLite stores them naive, in UTC; PostgreSQL
answers in the session's time zone). ``vigie.timeutil.as_utc`` does the same here, so the
list shows the same ``…+00:00`` times as anything read through the models.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from vigie.persistence import reflected_columns
from vigie.timeutil import as_utc


@dataclass(frozen=True, slots=True)
class Listed:
    """A device and its worker, as the list shows them."""

    device_id: str
    worker: str
    role: str
    phone: str
    site_label: str | None
    revoked_at: datetime | None
    online: bool
    last_seen_at: datetime | None
    batt: int | None


def _utc(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def list_devices(conn: Connection) -> list[Listed]:
    """Every device with its worker, by device id."""
    device, worker = reflected_columns(conn, "device"), reflected_columns(conn, "worker")
    stmt = (
        select(
            device.c.device_id,
            worker.c.name,
            worker.c.role,
            worker.c.phone,
            device.c.site_label,
            device.c.revoked_at,
            device.c.online,
            device.c.last_seen_at,
            device.c.batt,
        )
        .join_from(device, worker, device.c.worker_id == worker.c.id)
        .order_by(device.c.device_id)
    )
    return [
        Listed(
            device_id=row.device_id,
            worker=row.name,
            role=row.role,
            phone=row.phone,
            site_label=row.site_label,
            revoked_at=_utc(row.revoked_at),
            online=bool(row.online),
            last_seen_at=_utc(row.last_seen_at),
            batt=row.batt,
        )
        for row in conn.execute(stmt)
    ]
