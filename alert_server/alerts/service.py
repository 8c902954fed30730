"""Reads and rows of alerts. Keyword-only arguments, session first.

State changes are not here: they are the transitions of ``alerts.lifecycle``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, insert, literal_column, update
from sqlalchemy import select as select_columns
from sqlmodel import Session, select

from alert_server.alerts.models import Alert, AlertDepartement, AlertEvent
from vigie.persistence import Prepared, connection_of, insert_ignore, insert_ignore_statement

if TYPE_CHECKING:
    from vigie.persistence import Db
from vigie.vocabulary import ACTIVE_STATES, AlertState


@dataclass(frozen=True, slots=True)
class Stored:
    created: bool  # False: a repeat of an alert already stored
    alert_id: str  # the server's key of the alert (new or repeated)
    # A new press joining an incident: the incident's number of presses with this one.
    presses: int | None = None


def derived_alert_id(device_id: str, device_alert_id: str) -> str:
    """The server's key for an alert whose ``alert_id`` another device already used: stable,
    so that the repeats of this device's alert (on any server) find the same row."""
    digest = hashlib.sha256(f"{device_id}\0{device_alert_id}".encode()).hexdigest()[:40]
    return f"d-{digest}"


def store_alert(session: Db, *, values: dict[str, Any]) -> Stored:
    """Insert an alert unless this device already sent this ``alert_id`` (protocol.md 1.1:
    identity is ``(device_id, alert_id)``).

    ``INSERT … ON CONFLICT DO NOTHING``: correct even when two servers receive the same
    alert at the same instant (only one insert wins, the other sees a repeat). When the
    ``alert_id`` is taken by another device's alert, this one is stored under a derived key.
    """
    values = {**values}
    values.setdefault("device_alert_id", values["alert_id"])
    values.setdefault("last_press_at", values.get("created_at"))
    device_id, device_alert_id = values["device_id"], values["device_alert_id"]
    flush_pending(session)
    conn = connection_of(session)
    for attempt in range(2):
        # The derived key is hashed only when the device's own id is taken.
        key = values["alert_id"] if attempt == 0 else derived_alert_id(device_id, device_alert_id)
        values["alert_id"] = key
        if _INSERT_ALERT.rows(conn, values):
            return Stored(created=True, alert_id=key)
        existing = _DEVICE_ALERT_KEY.first(
            conn, {"device_id": device_id, "device_alert_id": device_alert_id}
        )
        if existing is not None:
            return Stored(created=False, alert_id=existing[0])
    # Only a SHA-256 collision gets here.
    raise RuntimeError(f"alert key collision for device_id={device_id!r}")


def insert_alert(session: Session, *, values: dict[str, Any]) -> bool:
    """``store_alert`` when only "was it new?" matters."""
    return store_alert(session, values=values).created


def find_device_alert(session: Session, *, device_id: str, device_alert_id: str) -> Alert | None:
    stmt = (
        select(Alert)
        .where(Alert.device_id == device_id)
        .where(Alert.device_alert_id == device_alert_id)
    )
    return session.exec(stmt).first()


# --- incidents (a flood of presses collapses into one) -----------------------------------


@dataclass(frozen=True, slots=True)
class IncidentHead:
    """What storing a press needs of its device's running incident (its first alert), read
    with one Core statement: the ingest writer does this for every press of a flood."""

    id: int
    alert_id: str
    device_alert_id: str
    state: str
    duress: bool
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    presses: int
    last_press_at: datetime | None
    flags: list[str]


_alert_t = Alert.__table__  # type: ignore[attr-defined]
_event_t = AlertEvent.__table__  # type: ignore[attr-defined]

# The statements every press runs: built once (a statement built per press, with its ORM
# attributes, coercions and cache key, cost more than running it) and run on the driver's
# cursor (``Prepared``: SQLAlchemy's execution path around each cost more than the statement).
_INCIDENT_PRIMARY = Prepared(
    select_columns(*(_alert_t.c[name] for name in IncidentHead.__slots__))
    .where(
        _alert_t.c.device_id == bindparam("device_id"),
        _alert_t.c.kind == bindparam("kind"),
        _alert_t.c.incident_of.is_(None),
        # The states written into the statement: a list of parameters is expanded again at
        # every execution (SQLAlchemy's "post-compile" step), for every press.
        _alert_t.c.state.in_([literal_column(f"'{s}'") for s in ACTIVE_STATES]),
        _alert_t.c.last_press_at >= bindparam("since"),
    )
    .order_by(_alert_t.c.last_press_at.desc())
    .limit(1)
    .with_for_update()
)
_INSERT_ALERT = Prepared(build=lambda dialect: insert_ignore_statement(dialect, _alert_t))
_INSERT_EVENT = Prepared(insert(_event_t))
_DEVICE_ALERT_KEY = Prepared(
    select_columns(_alert_t.c.alert_id).where(
        _alert_t.c.device_id == bindparam("device_id"),
        _alert_t.c.device_alert_id == bindparam("device_alert_id"),
    )
)
_COUNT_PRESS = Prepared(
    update(_alert_t)
    .where(_alert_t.c.id == bindparam("row_id"))
    .values(
        presses=_alert_t.c.presses + 1,
        last_press_at=bindparam("last_press_at", type_=_alert_t.c.last_press_at.type),
        flags=bindparam("flags", type_=_alert_t.c.flags.type),
    )
    .returning(_alert_t.c.presses)
)


def flush_pending(session: Db) -> None:
    """Write the ORM objects waiting in ``session`` before a Core statement reads or writes
    the same rows (the ORM would do it before its own queries: autoflush). A bare connection
    has none."""
    if isinstance(session, Connection):
        return
    if session.new or session.dirty or session.deleted:
        session.flush()


def incident_primary(
    session: Db, *, device_id: str, kind: str, since: datetime
) -> IncidentHead | None:
    """The first alert of the device's running incident of this kind, if its last press is
    at or after ``since``: open or acknowledged (a cancelled or resolved alert ends its
    incident, and a press after it is a new alert)."""
    flush_pending(session)
    row = _INCIDENT_PRIMARY.first(
        connection_of(session), {"device_id": device_id, "kind": kind, "since": since}
    )
    return IncidentHead(*row) if row is not None else None


def count_press(
    session: Db, *, row_id: int | None, last_press_at: datetime, flags: list[str]
) -> int:
    """One more press on the incident's first alert (its row ``id``): its count (returned),
    last press and flags. The count is incremented in the database, not from what the caller
    read."""
    (presses,) = _COUNT_PRESS.rows(
        connection_of(session),
        {"row_id": row_id, "last_press_at": last_press_at, "flags": flags},
    )[0]
    if isinstance(session, Connection):
        return presses
    # The ORM may hold this alert from an earlier message of the same transaction: it must
    # not go on believing its old count and flags.
    loaded = session.identity_map.get(session.identity_key(Alert, row_id))
    if loaded is not None:
        session.expire(loaded)
    return presses


def incident_members(session: Session, *, alert_id: str) -> list[Alert]:
    """The alerts attached to this incident (not the first one itself)."""
    stmt = select(Alert).where(Alert.incident_of == alert_id).order_by(Alert.id)  # type: ignore[arg-type]
    return list(session.exec(stmt))


def primary_of(session: Session, alert: Alert) -> Alert:
    """The incident's first alert (the one that escalates) for any of its alerts."""
    if alert.incident_of is None:
        return alert
    primary = get_alert(session, alert_id=alert.incident_of)
    return primary if primary is not None else alert


def add_departement(
    session: Session, *, alert_id: str, departement: str, at: datetime, reason: str
) -> bool:
    """Record that the alert concerns ``departement`` (idempotent). True when new."""
    values = {"alert_id": alert_id, "departement": departement, "added_at": at, "reason": reason}
    return insert_ignore(session, AlertDepartement, values, keys=["alert_id", "departement"]) == 1


def departements(session: Session, *, alert_id: str) -> list[str]:
    stmt = select(AlertDepartement.departement).where(AlertDepartement.alert_id == alert_id)
    return list(session.exec(stmt))


def open_for_device(session: Session, *, device_id: str) -> list[Alert]:
    stmt = (
        select(Alert).where(Alert.device_id == device_id).where(Alert.state.in_(ACTIVE_STATES))  # type: ignore[attr-defined]
    )
    return list(session.exec(stmt))


def get_alert(session: Session, *, alert_id: str) -> Alert | None:
    return session.exec(select(Alert).where(Alert.alert_id == alert_id)).first()


def add_event(
    session: Session,
    *,
    alert_id: str,
    at: datetime,
    type_: str,
    actor: str | None = None,
    **detail: Any,
) -> None:
    session.add(AlertEvent(alert_id=alert_id, at=at, type=type_, actor=actor, detail=detail))


def event_row(
    *, alert_id: str, at: datetime, type_: str, actor: str | None = None, **detail: Any
) -> dict[str, Any]:
    """One timeline event as ``add_events_now`` writes it."""
    return {"alert_id": alert_id, "at": at, "type": type_, "actor": actor, "detail": detail}


def add_events_now(session: Db, rows: list[dict[str, Any]]) -> None:
    """Timeline events (``event_row``) written at once, in this order, with one Core INSERT
    run once for all of them (the ingest writer's path: an ORM object per press cost a unit of
    work at every flush, and each execution costs more than the row it writes)."""
    flush_pending(session)
    conn = connection_of(session)
    if len(rows) == 1:
        _INSERT_EVENT.rows(conn, rows[0])
    else:
        _INSERT_EVENT.many(conn, rows)


def add_event_now(
    session: Db,
    *,
    alert_id: str,
    at: datetime,
    type_: str,
    actor: str | None = None,
    **detail: Any,
) -> None:
    """``add_event`` written at once with a Core INSERT."""
    add_events_now(
        session, [event_row(alert_id=alert_id, at=at, type_=type_, actor=actor, **detail)]
    )


def events(session: Session, *, alert_id: str) -> list[AlertEvent]:
    stmt = (
        select(AlertEvent)
        .where(AlertEvent.alert_id == alert_id)
        .order_by(AlertEvent.at, AlertEvent.id)  # type: ignore[arg-type]
    )
    return list(session.exec(stmt))


def undispatched(session: Session, *, older_than: datetime, limit: int = 100) -> list[str]:
    """Open alerts never handed to dispatch (e.g. the server died right after storing them)."""
    stmt = (
        select(Alert.alert_id)
        .where(Alert.dispatched_at.is_(None))  # type: ignore[union-attr]
        .where(Alert.state == AlertState.OPEN)
        .where(Alert.created_at <= older_than)
        .order_by(Alert.created_at)  # type: ignore[arg-type]
        .limit(limit)
    )
    return list(session.exec(stmt))
