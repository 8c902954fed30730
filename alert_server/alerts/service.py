"""Reads and state changes of alerts. Keyword-only arguments, session first."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, SQLModel, select

from alert_server.alerts.models import Alert, AlertDepartement, AlertEvent


def insert_alert(session: Session, *, values: dict[str, Any]) -> bool:
    """Insert an alert unless its ``alert_id`` exists. True when this call created it.

    ``INSERT … ON CONFLICT DO NOTHING``: correct even when two servers receive the same
    alert at the same instant (only one insert wins, the other sees a repeat).
    """
    return _insert_ignore(session, Alert, values, ["alert_id"])


def _insert_ignore(
    session: Session, model: type[SQLModel], values: dict[str, Any], keys: list[str]
) -> bool:
    """``INSERT … ON CONFLICT (keys) DO NOTHING``; True when this statement inserted the row.

    RETURNING yields a row only when something was inserted (rowcount is not reliable for
    ON CONFLICT DO NOTHING across drivers).
    """
    table = model.__table__  # type: ignore[attr-defined]
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=keys)
        .returning(*table.primary_key.columns)
    )
    return session.connection().execute(stmt).first() is not None


def mark_acknowledged(
    session: Session, *, alert_id: str, actor: str, via: str, now: datetime
) -> bool:
    """Compare-and-set open → acknowledged; True only for the one caller that wins."""
    result = session.connection().execute(
        update(Alert)
        .where(Alert.alert_id == alert_id)  # type: ignore[arg-type]
        .where(Alert.state == "open")  # type: ignore[arg-type]
        .values(state="acknowledged", acknowledged_at=now, acknowledged_by=actor)
    )
    won = result.rowcount == 1
    if won:
        add_event(session, alert_id=alert_id, at=now, type_="acknowledged", actor=actor, via=via)
    return won


def add_departement(
    session: Session, *, alert_id: str, departement: str, at: datetime, reason: str
) -> bool:
    """Record that the alert concerns ``departement`` (idempotent). True when new."""
    return _insert_ignore(
        session,
        AlertDepartement,
        {"alert_id": alert_id, "departement": departement, "added_at": at, "reason": reason},
        ["alert_id", "departement"],
    )


def departements(session: Session, *, alert_id: str) -> list[str]:
    stmt = select(AlertDepartement.departement).where(AlertDepartement.alert_id == alert_id)
    return list(session.exec(stmt))


def open_for_device(session: Session, *, device_id: str) -> list[Alert]:
    stmt = (
        select(Alert)
        .where(Alert.device_id == device_id)
        .where(Alert.state.in_(("open", "acknowledged")))  # type: ignore[attr-defined]
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
        .where(Alert.state == "open")
        .where(Alert.created_at <= older_than)
        .order_by(Alert.created_at)  # type: ignore[arg-type]
        .limit(limit)
    )
    return list(session.exec(stmt))
