"""What the dispatcher adds to an alert while it is open or after: free notes, the police's or
gendarmerie's own incident number, and the worker's other recent alerts.

Notes and the incident number are timeline rows (``alert_event``: ``note``,
``police_ref``), never an overwrite: every console sees them at once through the live stream,
the follow-up keeps who wrote what and when, and a later number does not erase an earlier
one. Each write is CSRF-checked, scoped to the alerts the account may see, and audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlmodel import Session, col, select

from alert_server.alerts import api as alerts_api
from alert_server.alerts import service as alerts_service
from alert_server.alerts.models import Alert, AlertEvent
from alert_server.dashboard import pages
from alert_server.dashboard.auth import check_csrf, engine_of
from alert_server.db import write_scope
from alert_server.users import service as users_service
from alert_server.users.api import client_of
from alert_server.users.schemas import Principal
from vigie.timeutil import utcnow
from vigie.vocabulary import AlertEventType

router = APIRouter(prefix="/dashboard", include_in_schema=False)

NOTE_MAX = 2000
REF_MAX = 64
RECENT_DAYS = 90
RECENT_LIMIT = 10

pages.MESSAGES.update(
    {
        "note_ok": ("ok", "Note ajoutée à la chronologie."),
        "note_empty": ("warn", "Note vide : rien n'a été ajouté."),
        "ref_ok": ("ok", "Numéro d'intervention enregistré."),
        "ref_empty": ("warn", "Numéro d'intervention vide : rien n'a été enregistré."),
    }
)


@dataclass(frozen=True, slots=True)
class Annotations:
    police_ref: str | None
    police_ref_by: str | None
    notes: int


def annotations_of(session: Session, alert_id: str) -> Annotations:
    rows = list(
        session.exec(
            select(AlertEvent)
            .where(AlertEvent.alert_id == alert_id)
            .where(col(AlertEvent.type).in_((AlertEventType.NOTE, AlertEventType.POLICE_REF)))
            .order_by(col(AlertEvent.id))
        )
    )
    refs = [r for r in rows if r.type == AlertEventType.POLICE_REF]
    last = refs[-1] if refs else None
    return Annotations(
        police_ref=str(last.detail.get("ref")) if last else None,
        police_ref_by=last.actor if last else None,
        notes=sum(1 for r in rows if r.type == AlertEventType.NOTE),
    )


def other_alerts(
    session: Session, *, principal: Principal, alert: Alert, now: datetime
) -> list[Alert]:
    """The same device's other alerts of the last 90 days that this account may see."""
    stmt = (
        select(Alert)
        .where(alerts_api.scope_clause(principal))
        .where(Alert.device_id == alert.device_id)
        .where(Alert.alert_id != alert.alert_id)
        .where(col(Alert.incident_of).is_(None))
        .where(col(Alert.created_at) >= now - timedelta(days=RECENT_DAYS))
        .order_by(col(Alert.created_at).desc())
        .limit(RECENT_LIMIT)
    )
    return list(session.exec(stmt))


def _write(
    request: Request, alert_id: str, *, type_: AlertEventType, action: str, **detail: str
) -> bool:
    """Appends the row and its audit record; False when the alert is not visible."""
    sess = pages.page_session(request)
    client = client_of(request)
    now = utcnow()
    with write_scope(engine_of(request)) as session:
        alert = alerts_api.get_visible(session, principal=sess.principal, alert_id=alert_id)
        if alert is None:
            return False
        alerts_service.add_event(
            session, alert_id=alert_id, at=now, type_=type_, actor=sess.principal.username, **detail
        )
        users_service.audit(
            session,
            action=action,
            now=now,
            actor=sess.principal.username,
            target=alert_id,
            ip=client.ip,
            user_agent=client.user_agent,
        )
    return True


@router.post("/alerts/{alert_id}/note")
def add_note(
    request: Request,
    alert_id: str,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    text: Annotated[str, Form(max_length=NOTE_MAX)] = "",
) -> Response:
    sess = pages.page_session(request)
    check_csrf(sess, csrf_token)
    if not text.strip():
        return pages._to_detail(request, alert_id, "note_empty")
    if not _write(
        request, alert_id, type_=AlertEventType.NOTE, action="alert.note", text=text.strip()
    ):
        return pages._not_found(request, sess)
    return pages._to_detail(request, alert_id, "note_ok")


@router.post("/alerts/{alert_id}/police-ref")
def set_police_ref(
    request: Request,
    alert_id: str,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    ref: Annotated[str, Form(max_length=REF_MAX)] = "",
) -> Response:
    sess = pages.page_session(request)
    check_csrf(sess, csrf_token)
    if not ref.strip():
        return pages._to_detail(request, alert_id, "ref_empty")
    if not _write(
        request,
        alert_id,
        type_=AlertEventType.POLICE_REF,
        action="alert.police_ref",
        ref=ref.strip(),
    ):
        return pages._not_found(request, sess)
    return pages._to_detail(request, alert_id, "ref_ok")
