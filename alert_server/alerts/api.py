"""The alerts HTTP API (thin router), and the scoped reads and actions it shares with the
dashboard.

Département scoping is part of every query (``scope_clause``), never a filter applied after
loading: an alert outside the caller's départements is not read at all, so it cannot leak by
list, by id (404, the same answer as a missing alert), by the live stream or by an action.
The scoped reads live here rather than in ``service.py`` because they are about who may see
what, which is the API's and the dashboard's concern, not the ingest's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import ColumnElement, Engine, false, or_, true
from sqlmodel import Session, col, select

from alert_server.alerts import service as alerts_service
from alert_server.alerts.models import Alert, AlertDepartement
from alert_server.alerts.schemas import (
    EVENT_LABELS_FR,
    STATE_LABELS_FR,
    AckConflict,
    AlertDetail,
    AlertState,
    AlertSummary,
    Position,
    Problem,
    ResolveRequest,
    TimelineEntry,
    WorkerContact,
)
from alert_server.db import read_scope, write_scope
from alert_server.devices.models import Device, Worker
from alert_server.users import service as users_service
from alert_server.users.api import UNAUTHORIZED, Client, api_principal, client_of, engine_of
from alert_server.users.schemas import Principal
from vigie.timeutil import as_utc, utcnow
from vigie.vocabulary import AlertState as State

if TYPE_CHECKING:
    from alert_server.pipeline import Pipeline

router = APIRouter(prefix="/api", tags=["alertes"])

# -- scoped reads --------------------------------------------------------------------------


def scope_clause(principal: Principal) -> ColumnElement[bool]:
    """The SQL condition "this alert is visible to ``principal``" (see ``Principal``).

    An alert concerns its own département and, through ``alert_departement``, the other
    side of an ambiguous border and any département it moved into: the dispatchers of each
    of them see it (and may take it in charge; the first one wins).
    """
    if not principal.restricted:
        return true()
    if not principal.departements:
        return false()
    deps = list(principal.departements)
    also = (
        select(AlertDepartement.alert_id)
        .where(AlertDepartement.alert_id == Alert.alert_id)
        .where(col(AlertDepartement.departement).in_(deps))
    )
    # IN (...) on indexed columns; a NULL departement never matches, by design.
    return or_(col(Alert.departement).in_(deps), also.exists())


def list_visible(
    session: Session,
    *,
    principal: Principal,
    states: Sequence[str] | None = None,
    departement: str | None = None,
    limit: int = 100,
) -> list[Alert]:
    """Visible alerts, newest first. The presses attached to an incident are not listed on
    their own: the incident's first alert carries their count (``presses``)."""
    stmt = select(Alert).where(scope_clause(principal)).where(col(Alert.incident_of).is_(None))
    if states:
        stmt = stmt.where(col(Alert.state).in_(list(states)))
    if departement:
        stmt = stmt.where(Alert.departement == departement)
    stmt = stmt.order_by(col(Alert.created_at).desc(), col(Alert.id).desc()).limit(limit)
    return list(session.exec(stmt))


def get_visible(session: Session, *, principal: Principal, alert_id: str) -> Alert | None:
    stmt = select(Alert).where(Alert.alert_id == alert_id).where(scope_clause(principal))
    return session.exec(stmt).first()


def visible_by_ids(
    session: Session, *, principal: Principal, alert_ids: Iterable[str]
) -> list[Alert]:
    ids = list(dict.fromkeys(alert_ids))
    if not ids:
        return []
    stmt = select(Alert).where(col(Alert.alert_id).in_(ids)).where(scope_clause(principal))
    return list(session.exec(stmt))


# -- timeline ------------------------------------------------------------------------------
# The timeline of an alert is merged from several sources. ``alert_event`` rows are the
# alert's own; the app passes the others (dispatch notifications and their deliveries, for
# instance) to ``install_dashboard``, which keeps them on the app (``timeline_sources``).
# A source receives the open session and the alert and returns entries in any order.

TimelineSource = Callable[[Session, Alert], Iterable[TimelineEntry]]


def alert_event_entries(session: Session, alert: Alert) -> list[TimelineEntry]:
    return [
        TimelineEntry(
            at=as_utc(e.at),
            source="alert_event",
            type=e.type,
            label=EVENT_LABELS_FR.get(e.type, e.type),
            actor=e.actor,
            detail=e.detail or {},
        )
        for e in alerts_service.events(session, alert_id=alert.alert_id)
    ]


def timeline_sources(request: Request) -> Sequence[TimelineSource]:
    """This app's sources: the alert's own events first, then those the app was built with."""
    return (alert_event_entries, *getattr(request.app.state, "timeline_sources", ()))


def timeline(
    session: Session, alert: Alert, sources: Sequence[TimelineSource]
) -> list[TimelineEntry]:
    entries: list[TimelineEntry] = []
    for source in sources:
        entries.extend(source(session, alert))
    # Stable: entries at the same instant keep their source's order.
    return sorted(entries, key=lambda e: as_utc(e.at))


# -- conversions ---------------------------------------------------------------------------


def position_of(alert: Alert) -> Position | None:
    if alert.pos_lat is None or alert.pos_lon is None:
        return None
    return Position(
        lat=alert.pos_lat,
        lon=alert.pos_lon,
        acc_m=alert.pos_acc_m,
        at=as_utc(alert.pos_at) if alert.pos_at else None,
        src=alert.pos_src,
    )


def _utc(value: Any) -> Any:
    return as_utc(value) if value is not None else None


def to_summary(alert: Alert) -> AlertSummary:
    return AlertSummary(
        alert_id=alert.alert_id,
        device_id=alert.device_id,
        kind=alert.kind,
        state=alert.state,
        duress=alert.duress,
        departement=alert.departement,
        commune=alert.commune_nom,
        position=position_of(alert),
        created_at=as_utc(alert.created_at),
        acknowledged_at=_utc(alert.acknowledged_at),
        acknowledged_by=alert.acknowledged_by,
        resolved_at=_utc(alert.resolved_at),
        outcome=alert.outcome,
        flags=list(alert.flags or []),
        device_alert_id=alert.device_alert_id,
        presses=alert.presses,
        incident_of=alert.incident_of,
    )


def worker_contact(session: Session, alert: Alert) -> WorkerContact | None:
    found = session.exec(
        select(Device, Worker)
        .join(Worker, col(Worker.id) == col(Device.worker_id))
        .where(Device.device_id == alert.device_id)
    ).first()
    if found is None:
        return None
    device, worker = found
    # First name only: the dispatcher calls the worker back, they do not need a full identity.
    first_name = worker.name.split()[0] if worker.name.strip() else ""
    return WorkerContact(
        first_name=first_name, role=worker.role, phone=worker.phone, site_label=device.site_label
    )


def to_detail(session: Session, alert: Alert, sources: Sequence[TimelineSource]) -> AlertDetail:
    return AlertDetail(
        **to_summary(alert).model_dump(),
        original_kind=alert.original_kind,
        batt=alert.batt,
        force=alert.force,
        note=alert.note,
        worker=worker_contact(session, alert),
        timeline=timeline(session, alert, sources),
    )


# -- actions (API and dashboard) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActionResult:
    """``done``: this call acknowledged (or closed) the alert. ``alert``: its state after."""

    done: bool
    alert: Alert


def acknowledge(
    engine: Engine, pipeline: Pipeline, *, principal: Principal, client: Client, alert_id: str
) -> ActionResult | None:
    """Take a visible alert in charge (first acknowledgement wins); None when not visible."""
    with read_scope(engine) as session:
        if get_visible(session, principal=principal, alert_id=alert_id) is None:
            return None
    now = utcnow()
    # Atomic in the pipeline (conditional UPDATE): a click here, an SMS reply and a key press
    # at the same instant make exactly one acknowledgement; the device hears about it.
    won = pipeline.acknowledge(alert_id, actor=principal.username, via="dashboard", now=now)
    with write_scope(engine) as session:
        alert = alerts_service.get_alert(session, alert_id=alert_id)
        assert alert is not None
        users_service.audit(
            session,
            action="alert.ack" if won else "alert.ack_refused",
            now=now,
            actor=principal.username,
            target=alert_id,
            ip=client.ip,
            user_agent=client.user_agent,
            state=alert.state,
            acknowledged_by=alert.acknowledged_by,
        )
    return ActionResult(won, alert)


def resolve(
    engine: Engine,
    pipeline: Pipeline,
    *,
    principal: Principal,
    client: Client,
    alert_id: str,
    request: ResolveRequest,
) -> ActionResult | None:
    """Close a visible alert with an outcome; None when not visible."""
    with read_scope(engine) as session:
        if get_visible(session, principal=principal, alert_id=alert_id) is None:
            return None
    now = utcnow()
    done = pipeline.resolve(
        alert_id, actor=principal.username, outcome=request.outcome, note=request.note, now=now
    )
    with write_scope(engine) as session:
        alert = alerts_service.get_alert(session, alert_id=alert_id)
        assert alert is not None
        users_service.audit(
            session,
            action="alert.resolve" if done else "alert.resolve_refused",
            now=now,
            actor=principal.username,
            target=alert_id,
            ip=client.ip,
            user_agent=client.user_agent,
            outcome=request.outcome,
            state=alert.state,
        )
    return ActionResult(done, alert)


def audit_view(engine: Engine, *, principal: Principal, client: Client, alert_id: str) -> None:
    """Reading an alert's detail shows a worker's name and number: that access is recorded."""
    with write_scope(engine) as session:
        users_service.audit(
            session,
            action="alert.view",
            now=utcnow(),
            actor=principal.username,
            target=alert_id,
            ip=client.ip,
            user_agent=client.user_agent,
        )


def conflict_message(alert: Alert) -> str:
    if alert.state == State.ACKNOWLEDGED:
        return f"Alerte déjà prise en charge par {alert.acknowledged_by}"
    return f"Alerte {STATE_LABELS_FR.get(alert.state, alert.state).lower()} : action impossible"


# -- routes --------------------------------------------------------------------------------

PrincipalDep = Annotated[Principal, Depends(api_principal)]
AlertIdPath = Annotated[str, Path(min_length=1, max_length=64)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "Alerte inexistante ou hors de vos départements"}
}


def _pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.runtime.pipeline
    return pipeline


def _not_found() -> HTTPException:
    return HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="Alerte introuvable")


@router.get(
    "/alerts",
    response_model=list[AlertSummary],
    summary="Alertes visibles, les plus récentes d'abord",
    responses=UNAUTHORIZED,
)
def api_list_alerts(
    request: Request,
    principal: PrincipalDep,
    state: Annotated[AlertState | None, Query(description="Filtrer sur un état")] = None,
    departement: Annotated[str | None, Query(max_length=3)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AlertSummary]:
    with read_scope(engine_of(request)) as session:
        rows = list_visible(
            session,
            principal=principal,
            states=[state] if state else None,
            departement=departement,
            limit=limit,
        )
        return [to_summary(a) for a in rows]


@router.get(
    "/alerts/{alert_id}",
    response_model=AlertDetail,
    summary="Une alerte et toute sa chronologie",
    responses={**UNAUTHORIZED, **NOT_FOUND},
)
def api_get_alert(request: Request, principal: PrincipalDep, alert_id: AlertIdPath) -> AlertDetail:
    engine = engine_of(request)
    with read_scope(engine) as session:
        alert = get_visible(session, principal=principal, alert_id=alert_id)
        if alert is None:
            raise _not_found()
        detail = to_detail(session, alert, timeline_sources(request))
    audit_view(engine, principal=principal, client=client_of(request), alert_id=alert_id)
    return detail


@router.post(
    "/alerts/{alert_id}/ack",
    response_model=AlertSummary,
    summary="Prendre l'alerte en charge (la première prise en charge l'emporte)",
    responses={
        **UNAUTHORIZED,
        **NOT_FOUND,
        409: {"model": AckConflict, "description": "Déjà prise en charge, annulée ou close"},
    },
)
def api_ack_alert(
    request: Request, principal: PrincipalDep, alert_id: AlertIdPath
) -> AlertSummary | JSONResponse:
    result = acknowledge(
        engine_of(request),
        _pipeline(request),
        principal=principal,
        client=client_of(request),
        alert_id=alert_id,
    )
    if result is None:
        raise _not_found()
    if not result.done:
        a = result.alert
        body = AckConflict(
            detail=conflict_message(a),
            state=a.state,
            acknowledged_by=a.acknowledged_by,
            acknowledged_at=_utc(a.acknowledged_at),
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=status.HTTP_409_CONFLICT)
    return to_summary(result.alert)


@router.post(
    "/alerts/{alert_id}/resolve",
    response_model=AlertSummary,
    summary="Clôturer l'alerte avec son issue et une note",
    responses={
        **UNAUTHORIZED,
        **NOT_FOUND,
        409: {"model": Problem, "description": "Alerte déjà clôturée"},
        400: {"model": Problem, "description": "Corps de requête illisible (JSON invalide)"},
    },
)
def api_resolve_alert(
    request: Request, principal: PrincipalDep, alert_id: AlertIdPath, body: ResolveRequest
) -> AlertSummary | JSONResponse:
    result = resolve(
        engine_of(request),
        _pipeline(request),
        principal=principal,
        client=client_of(request),
        alert_id=alert_id,
        request=body,
    )
    if result is None:
        raise _not_found()
    if not result.done:
        return JSONResponse(
            {"detail": "Alerte déjà clôturée"}, status_code=status.HTTP_409_CONFLICT
        )
    return to_summary(result.alert)
