"""The live board's data: filters, the scoped query, ordering, one row's HTML, the cursor.

Shared by the board page, its resynchronisation endpoint and the live stream, so that a row
looks the same however it reached the screen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func
from sqlmodel import Session, col, select

from alert_server.alerts.api import scope_clause
from alert_server.alerts.models import Alert, AlertEvent
from alert_server.alerts.schemas import KIND_LABELS_FR
from alert_server.dashboard.presstime import urgency_key
from alert_server.dashboard.render import STATE_FILTERS, render
from alert_server.geo.codes import DEPARTEMENT_CODES
from alert_server.users.schemas import Principal
from vigie.vocabulary import AlertState

BOARD_LIMIT = 200
UNKNOWN_DEPARTEMENT = "inconnu"


@dataclass(frozen=True, slots=True)
class BoardFilter:
    state: str = "active"
    departement: str | None = None  # a code, UNKNOWN_DEPARTEMENT, or None for all

    @classmethod
    def parse(cls, principal: Principal, state: str | None, departement: str | None) -> BoardFilter:
        key = state if state in STATE_FILTERS else "active"
        dep = (departement or "").strip().upper()
        if dep == UNKNOWN_DEPARTEMENT.upper():
            dep = UNKNOWN_DEPARTEMENT
        allowed = principal.departements if principal.restricted else DEPARTEMENT_CODES
        if dep == UNKNOWN_DEPARTEMENT and principal.restricted:
            dep = ""
        if dep and dep != UNKNOWN_DEPARTEMENT and dep not in allowed:
            dep = ""
        return cls(state=key, departement=dep or None)

    @property
    def states(self) -> tuple[str, ...] | None:
        return STATE_FILTERS[self.state][1]

    def matches(self, alert: Alert) -> bool:
        states = self.states
        if states is not None and alert.state not in states:
            return False
        if self.departement == UNKNOWN_DEPARTEMENT:
            return alert.departement is None
        return self.departement is None or alert.departement == self.departement

    def query(self) -> dict[str, str]:
        out = {"state": self.state}
        if self.departement:
            out["departement"] = self.departement
        return out


def board_alerts(session: Session, *, principal: Principal, filt: BoardFilter) -> list[Alert]:
    # The presses attached to an incident show on its first alert (their count), not as rows.
    stmt = select(Alert).where(scope_clause(principal)).where(col(Alert.incident_of).is_(None))
    if filt.states is not None:
        stmt = stmt.where(col(Alert.state).in_(filt.states))
    if filt.departement == UNKNOWN_DEPARTEMENT:
        stmt = stmt.where(col(Alert.departement).is_(None))
    elif filt.departement:
        stmt = stmt.where(Alert.departement == filt.departement)
    # Waiting alerts are never pushed out of the limit by closed ones.
    waiting_first = case((col(Alert.state) == AlertState.OPEN, 0), else_=1)
    stmt = stmt.order_by(waiting_first, col(Alert.created_at).desc(), col(Alert.id).desc())
    stmt = stmt.limit(BOARD_LIMIT)
    return sort_for_board(session.exec(stmt))


def sort_for_board(alerts: Iterable[Alert]) -> list[Alert]:
    """By urgency (``presstime.urgency_key``): duress, then the longest waiting."""
    return sorted(alerts, key=urgency_key)


def open_alert_ids(session: Session, *, principal: Principal) -> list[str]:
    """Every visible unacknowledged alert, whatever the board's filter: the alarm rings for
    those even when the dispatcher is looking at something else."""
    stmt = (
        select(Alert.alert_id)
        .where(scope_clause(principal))
        .where(Alert.state == AlertState.OPEN)
        .where(col(Alert.incident_of).is_(None))
        .order_by(col(Alert.created_at).desc())
        .limit(1000)
    )
    return list(session.exec(stmt))


def current_cursor(session: Session) -> int:
    """The newest timeline row id: the live stream resumes after it."""
    newest = session.exec(select(func.coalesce(func.max(col(AlertEvent.id)), 0))).one()
    return int(newest or 0)


def render_row(alert: Alert, *, csrf: str, prefix: str, now: datetime) -> str:
    return render("_alert_row.html", a=alert, csrf=csrf, prefix=prefix, now=now)


def row_payload(
    alert: Alert, *, filt: BoardFilter | None, csrf: str, prefix: str, now: datetime
) -> dict[str, Any]:
    """What the stream sends for one changed alert."""
    payload: dict[str, Any] = {
        "alert_id": alert.alert_id,
        "state": alert.state,
        "duress": alert.duress,
        # For the desktop notification: what and where, in French.
        "label": " — ".join(
            p
            for p in (
                KIND_LABELS_FR.get(alert.kind, alert.kind),
                alert.commune_nom
                or (f"département {alert.departement}" if alert.departement else ""),
            )
            if p
        ),
    }
    if filt is not None:
        match = filt.matches(alert)
        payload["match"] = match
        if match:
            payload["html"] = render_row(alert, csrf=csrf, prefix=prefix, now=now)
    return payload
