"""The console's pages (server-rendered, French): login, live board, alert detail, devices,
referent coverage, audit trail. Thin: reads and actions are in ``alerts.api`` and
``users.service``; every state-changing form is checked against the session's CSRF token."""

from __future__ import annotations

import hmac
import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import Session, col, select

import alert_server.audit as audit_trail
from alert_server.alerts import api as alerts_api
from alert_server.alerts import service as alerts_service
from alert_server.alerts.models import Alert
from alert_server.alerts.schemas import ResolveRequest, TimelineEntry
from alert_server.dashboard.auth import (
    PageSession,
    check_csrf,
    clear_session_cookie,
    dashboard_config,
    engine_of,
    new_login_token,
    optional_session,
    page_session,
    safe_next,
    set_login_cookie,
    set_session_cookie,
)
from alert_server.dashboard.board import (
    UNKNOWN_DEPARTEMENT,
    BoardFilter,
    board_alerts,
    current_cursor,
    open_alert_ids,
    render_row,
)
from alert_server.dashboard.config import BOUNDARY_ATTRIBUTION
from alert_server.dashboard.render import PARIS, render
from alert_server.dashboard.summary import escalation_summary, plain_timeline
from alert_server.db import read_scope, write_scope
from alert_server.devices.models import Device, Worker
from alert_server.geo.codes import DEPARTEMENT_CODES, departement_sort_key
from alert_server.users import service as users_service
from alert_server.users.api import client_of
from alert_server.users.schemas import ADMIN, Principal
from vigie.timeutil import as_utc, rfc3339, utcnow
from vigie.vocabulary import AlertState

if TYPE_CHECKING:
    from alert_server.pipeline import Pipeline

router = APIRouter(prefix="/dashboard", include_in_schema=False)
root_router = APIRouter(include_in_schema=False)

SessionDep = Annotated[PageSession, Depends(page_session)]
# A device silent for longer than this is shown as "silencieux" even if the broker still
# says online (its last will only fires when the TCP connection is seen to be dead).
STALE_AFTER = timedelta(minutes=15)

MESSAGES = {
    "ack_ok": ("ok", "Alerte prise en charge. Le boîtier du travailleur en est informé."),
    "ack_conflict": ("warn", "Cette alerte n'était plus en attente : voir qui l'a prise."),
    "resolved": ("ok", "Alerte clôturée."),
    "resolve_conflict": ("warn", "Cette alerte était déjà clôturée."),
}


def _page(
    request: Request,
    sess: PageSession | None,
    template: str,
    *,
    active: str = "",
    status_code: int = 200,
    stream_query: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    config = dashboard_config(request)
    now = utcnow()
    if sess is not None and "cursor" not in context:
        # Pages without a live list still ring for new alerts: they need the stream's start.
        with write_scope(engine_of(request)) as session:
            context.update(_live_context(session, sess.principal))
    html = render(
        template,
        config=config,
        prefix=config.prefix,
        static=lambda p: f"{config.static_prefix}/{p}?v={config.static_version}",
        principal=sess.principal if sess else None,
        csrf=sess.csrf_token if sess else "",
        active=active,
        now=now,
        server_now=rfc3339(now),
        stream_query=stream_query or {"view": "other"},
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def _pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.runtime.pipeline
    return pipeline


def _departement_choices(principal: Principal) -> list[str]:
    if principal.restricted:
        return list(principal.departements)
    return sorted(DEPARTEMENT_CODES, key=departement_sort_key)


def _live_context(session: Session, principal: Principal) -> dict[str, Any]:
    # Read the cursor BEFORE the alerts: a change in between is then both on the page and in
    # the stream (harmless), never in neither.
    return {
        "cursor": current_cursor(session),
        "open_ids": open_alert_ids(session, principal=principal),
    }


# -- login / logout ------------------------------------------------------------------------


@root_router.get("/")
def root(request: Request) -> RedirectResponse:
    return RedirectResponse(dashboard_config(request).prefix + "/", status_code=303)


def _login_page(
    request: Request,
    *,
    error: str | None,
    next_path: str,
    status_code: int = 200,
    username: str = "",
) -> HTMLResponse:
    config = dashboard_config(request)
    token = new_login_token()
    response = _page(
        request,
        None,
        "login.html",
        status_code=status_code,
        error=error,
        next_path=safe_next(config, next_path),
        login_token=token,
        username=username,
    )
    set_login_cookie(response, config, token)
    return response


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    if optional_session(request) is not None:
        return RedirectResponse(safe_next(dashboard_config(request), next), status_code=303)
    return _login_page(request, error=None, next_path=next or "")


@router.post("/login")
def login_submit(
    request: Request,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=2000)] = "",
    login_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    config = dashboard_config(request)
    cookie = request.cookies.get(config.login_cookie, "")
    if (
        not login_token
        or not cookie
        or not hmac.compare_digest(login_token.encode(), cookie.encode())
    ):
        return _login_page(
            request,
            error="Le formulaire a expiré : recommencez.",
            next_path=next,
            status_code=403,
            username=username,
        )
    client = client_of(request)
    now = utcnow()
    attempted = users_service.normalise_username(username)[:64]
    with write_scope(engine_of(request)) as session:
        result = users_service.login(
            session, username=username, password=password, ip=client.ip, now=now
        )
        token: str | None = None
        if result.status == "ok":
            assert result.principal is not None
            token, _ = users_service.open_session(
                session,
                principal=result.principal,
                ip=client.ip,
                user_agent=client.user_agent,
                now=now,
            )
            users_service.audit(
                session,
                action="login.ok",
                now=now,
                actor=result.principal.username,
                ip=client.ip,
                user_agent=client.user_agent,
                via="console",
            )
        else:
            users_service.audit(
                session,
                action="login.throttled" if result.status == "throttled" else "login.failed",
                now=now,
                target=attempted,
                ip=client.ip,
                user_agent=client.user_agent,
                via="console",
            )
    if result.status == "throttled":
        return _login_page(
            request,
            error=f"Trop de tentatives. Réessayez dans {math.ceil(result.retry_after_s)} s.",
            next_path=next,
            status_code=429,
            username=username,
        )
    if token is None:
        return _login_page(
            request,
            error="Identifiant ou mot de passe incorrect.",
            next_path=next,
            status_code=401,
            username=username,
        )
    response = RedirectResponse(safe_next(config, next), status_code=303)
    set_session_cookie(response, config, token)
    response.delete_cookie(
        config.login_cookie,
        path="/",
        httponly=True,
        samesite="strict",
        secure=config.secure_cookies,
    )
    return response


@router.post("/logout")
def logout(
    request: Request, sess: SessionDep, csrf_token: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    check_csrf(sess, csrf_token)
    client = client_of(request)
    now = utcnow()
    with write_scope(engine_of(request)) as session:
        users_service.close_session(session, token=sess.token, now=now)
        users_service.audit(
            session,
            action="logout",
            now=now,
            actor=sess.principal.username,
            ip=client.ip,
            user_agent=client.user_agent,
        )
    config = dashboard_config(request)
    response = RedirectResponse(f"{config.prefix}/login", status_code=303)
    clear_session_cookie(response, config)
    return response


@router.get("/session")
def session_check(request: Request) -> Response:
    """For the page's script: is my session still valid? (204 or 401)"""
    return Response(status_code=204 if optional_session(request) is not None else 401)


# -- the live board ------------------------------------------------------------------------


@router.get("/")
def board(
    request: Request,
    sess: SessionDep,
    state: Annotated[str | None, Query(max_length=20)] = None,
    departement: Annotated[str | None, Query(max_length=10)] = None,
) -> HTMLResponse:
    filt = BoardFilter.parse(sess.principal, state, departement)
    with read_scope(engine_of(request)) as session:
        live = _live_context(session, sess.principal)
        alerts = board_alerts(session, principal=sess.principal, filt=filt)
    audit_trail.record_read(
        engine_of(request), request, sess.principal, audit_trail.ALERT_LIST,
        rows=len(alerts), via="console",
    )  # fmt: skip
    counts = {
        AlertState.OPEN: sum(1 for a in alerts if a.state == AlertState.OPEN),
        AlertState.ACKNOWLEDGED: sum(1 for a in alerts if a.state == AlertState.ACKNOWLEDGED),
    }
    return _page(
        request,
        sess,
        "board.html",
        active="board",
        alerts=alerts,
        filt=filt,
        counts=counts,
        departements=_departement_choices(sess.principal),
        unknown_departement=UNKNOWN_DEPARTEMENT,
        stream_query={"view": "board", **filt.query()},
        **live,
    )


@router.get("/board/rows")
def board_rows(
    request: Request,
    sess: SessionDep,
    state: Annotated[str | None, Query(max_length=20)] = None,
    departement: Annotated[str | None, Query(max_length=10)] = None,
) -> JSONResponse:
    """The board's rows and the open alerts, for a page that reconnects after an outage."""
    filt = BoardFilter.parse(sess.principal, state, departement)
    prefix = dashboard_config(request).prefix
    now = utcnow()
    with read_scope(engine_of(request)) as session:
        live = _live_context(session, sess.principal)
        rows = [
            render_row(a, csrf=sess.csrf_token, prefix=prefix, now=now)
            for a in board_alerts(session, principal=sess.principal, filt=filt)
        ]
    audit_trail.record_read(
        engine_of(request), request, sess.principal, audit_trail.ALERT_LIST,
        rows=len(rows), via="console",
    )  # fmt: skip
    return JSONResponse({"rows": rows, "open_ids": live["open_ids"], "server_now": rfc3339(now)})


# -- alert detail --------------------------------------------------------------------------


def _trail(session: Session, alert: Alert, entries: list[TimelineEntry]) -> list[dict[str, Any]]:
    """Positions over time: the alert's own, every timeline entry that carries one (position
    updates, when a stage records them), and the device's last known position if newer."""
    points: list[tuple[datetime, float, float, float | None]] = []
    if alert.pos_lat is not None and alert.pos_lon is not None:
        points.append(
            (
                as_utc(alert.pos_at or alert.created_at),
                alert.pos_lat,
                alert.pos_lon,
                alert.pos_acc_m,
            )
        )
    for e in entries:
        lat, lon = e.detail.get("lat"), e.detail.get("lon")
        if isinstance(lat, int | float) and isinstance(lon, int | float):
            acc = e.detail.get("acc_m")
            points.append(
                (
                    as_utc(e.at),
                    float(lat),
                    float(lon),
                    acc if isinstance(acc, int | float) else None,
                )
            )
    device = session.get(Device, alert.device_id)
    if (
        device is not None
        and device.last_lat is not None
        and device.last_lon is not None
        and device.last_pos_at is not None
        and as_utc(device.last_pos_at) > as_utc(alert.pos_at or alert.created_at)
    ):
        points.append(
            (as_utc(device.last_pos_at), device.last_lat, device.last_lon, device.last_acc_m)
        )
    points.sort(key=lambda p: p[0])
    return [{"at": rfc3339(t), "lat": lat, "lon": lon, "acc_m": acc} for t, lat, lon, acc in points]


def _detail_context(request: Request, sess: PageSession, alert_id: str) -> dict[str, Any] | None:
    config = dashboard_config(request)
    with read_scope(engine_of(request)) as session:
        live = _live_context(session, sess.principal)
        alert = alerts_api.get_visible(session, principal=sess.principal, alert_id=alert_id)
        if alert is None:
            return None
        entries = alerts_api.timeline(session, alert, alerts_api.timeline_sources(request))
        worker = alerts_api.worker_contact(session, alert)
        trail = _trail(session, alert, entries)
        from alert_server.dashboard import notes

        extras = {
            "annotations": notes.annotations_of(session, alert.alert_id),
            "others": notes.other_alerts(
                session, principal=sess.principal, alert=alert, now=utcnow()
            ),
        }
        # Its own, the other side of an ambiguous border, any it moved into.
        concerned = sorted(
            {*alerts_service.departements(session, alert_id=alert.alert_id)}
            | ({alert.departement} if alert.departement else set()),
            key=departement_sort_key,
        )
    position = alerts_api.position_of(alert)
    map_data = {
        "position": position.model_dump(mode="json") if position else None,
        "trail": trail,
        "departement": alert.departement,
        "departements": concerned,
        "outlines_url": f"{config.prefix}/geo/departements.geojson",
        "communes_url": f"{config.prefix}/geo/communes.geojson",
        "tile_url": config.tile_url,
        "tile_attribution": config.tile_attribution,
        "boundary_attribution": BOUNDARY_ATTRIBUTION,
    }
    return {
        "alert": alert,
        "timeline": entries,
        "worker": worker,
        "concerned": concerned,
        "map_data": map_data,
        "place": {"address": None},
        "summary": escalation_summary(entries, utcnow()),
        "lines": plain_timeline(entries),
        **extras,
        **live,
    }


@router.get("/alerts/{alert_id}")
def alert_detail(
    request: Request,
    sess: SessionDep,
    alert_id: str,
    msg: Annotated[str | None, Query(max_length=30)] = None,
) -> HTMLResponse:
    context = _detail_context(request, sess, alert_id)
    if context is None:
        return _not_found(request, sess)
    alerts_api.audit_view(
        engine_of(request), principal=sess.principal, client=client_of(request), alert_id=alert_id
    )
    return _page(
        request,
        sess,
        "alert.html",
        active="board",
        message=MESSAGES.get(msg or ""),
        form_error=None,
        form_values={"outcome": "", "note": ""},
        stream_query={"view": "detail", "alert": alert_id},
        **context,
    )


@router.get("/alerts/{alert_id}/live")
def alert_live_fragment(request: Request, sess: SessionDep, alert_id: str) -> Response:
    """The parts of the detail page that change (status, timeline), for live refresh."""
    context = _detail_context(request, sess, alert_id)
    if context is None:
        return Response(status_code=404)
    html = render(
        "_alert_live.html",
        prefix=dashboard_config(request).prefix,
        now=utcnow(),
        csrf=sess.csrf_token,
        **context,
    )
    return HTMLResponse(html)


def _not_found(request: Request, sess: PageSession) -> HTMLResponse:
    return _page(request, sess, "not_found.html", active="board", status_code=404)


@router.post("/alerts/{alert_id}/ack")
def alert_ack(
    request: Request,
    sess: SessionDep,
    alert_id: str,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    check_csrf(sess, csrf_token)
    result = alerts_api.acknowledge(
        engine_of(request),
        _pipeline(request),
        principal=sess.principal,
        client=client_of(request),
        alert_id=alert_id,
    )
    if result is None:
        return _not_found(request, sess)
    msg = "ack_ok" if result.done else "ack_conflict"
    return _to_detail(request, alert_id, msg)


def _to_detail(request: Request, alert_id: str, msg: str) -> RedirectResponse:
    url = request.url_for("alert_detail", alert_id=alert_id).include_query_params(msg=msg)
    return RedirectResponse(url.path + "?" + url.query, status_code=303)


@router.post("/alerts/{alert_id}/resolve")
def alert_resolve(
    request: Request,
    sess: SessionDep,
    alert_id: str,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    outcome: Annotated[str, Form(max_length=64)] = "",
    note: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    check_csrf(sess, csrf_token)
    try:
        body = ResolveRequest.model_validate({"outcome": outcome, "note": note or None})
    except ValidationError as exc:
        context = _detail_context(request, sess, alert_id)
        if context is None:
            return _not_found(request, sess)
        problems = {str(e["loc"][0]) if e["loc"] else "": e for e in exc.errors()}
        error = (
            "Choisissez l'issue de l'alerte."
            if "outcome" in problems
            else "Une note est obligatoire pour l'issue « autre »."
            if outcome == "other"
            else "Note trop longue (2000 caractères au plus)."
        )
        return _page(
            request,
            sess,
            "alert.html",
            active="board",
            status_code=422,
            message=None,
            form_error=error,
            form_values={"outcome": outcome, "note": note},
            stream_query={"view": "detail", "alert": alert_id},
            **context,
        )
    result = alerts_api.resolve(
        engine_of(request),
        _pipeline(request),
        principal=sess.principal,
        client=client_of(request),
        alert_id=alert_id,
        request=body,
    )
    if result is None:
        return _not_found(request, sess)
    return _to_detail(request, alert_id, "resolved" if result.done else "resolve_conflict")


# -- devices and presence ------------------------------------------------------------------


@router.get("/devices")
def devices_page(request: Request, sess: SessionDep) -> HTMLResponse:
    # Devices are not tied to a département (a nurse crosses borders all day): only accounts
    # without a restriction see the whole fleet.
    if sess.principal.restricted:
        return _page(request, sess, "forbidden.html", active="devices", status_code=403)
    now = utcnow()
    with read_scope(engine_of(request)) as session:
        live = _live_context(session, sess.principal)
        rows = session.exec(
            select(Device, Worker)
            .join(Worker, col(Worker.id) == col(Device.worker_id))
            .order_by(col(Device.device_id))
        ).all()
    devices: list[dict[str, Any]] = []
    for device, worker in rows:
        seen = as_utc(device.last_seen_at) if device.last_seen_at else None
        if device.revoked_at is not None:
            status = "revoked"
        elif not device.online:
            status = "offline"
        elif seen is None or now - seen > STALE_AFTER:
            status = "stale"
        else:
            status = "online"
        devices.append({"d": device, "role": worker.role, "status": status, "seen": seen})
    order = {"offline": 0, "stale": 1, "online": 2, "revoked": 3}
    devices.sort(key=lambda r: (order[str(r["status"])], r["d"].device_id))
    summary = {k: sum(1 for r in devices if r["status"] == k) for k in order}
    return _page(
        request,
        sess,
        "devices.html",
        active="devices",
        devices=devices,
        summary=summary,
        stale_after_min=int(STALE_AFTER.total_seconds() // 60),
        **live,
    )


# -- referent coverage ---------------------------------------------------------------------


def _coverage(request: Request, principal: Principal) -> dict[str, Any]:
    try:
        from alert_server.referents import check
        from alert_server.referents.service import current_directory
    except ImportError:
        return {"directory": None}
    directory = current_directory(engine_of(request))
    if directory is None:
        return {"directory": None}
    now = utcnow()

    def mine(dep: str) -> bool:
        return principal.sees_departement(dep)

    gaps: dict[tuple[str, str], list[str]] = {}
    for gap in check.weekly_gaps(directory):
        if mine(gap.departement):
            gaps.setdefault((gap.departement, gap.force), []).extend(
                check.day_segments(gap.start, gap.end)
            )
    return {
        "directory": directory,
        "now_gaps": [(d, f) for d, f in check.unreachable_now(directory, now) if mine(d)],
        "weekly_gaps": sorted(
            gaps.items(), key=lambda kv: (departement_sort_key(kv[0][0]), kv[0][1])
        ),
        "missing": [d for d in check.departements_without_entry(directory) if mine(d)],
        "fallback": directory.national_fallback,
    }


@router.get("/coverage")
def coverage_page(request: Request, sess: SessionDep) -> HTMLResponse:
    with read_scope(engine_of(request)) as session:
        live = _live_context(session, sess.principal)
    return _page(
        request,
        sess,
        "coverage.html",
        active="coverage",
        **_coverage(request, sess.principal),
        **live,
    )


# -- statistics and ONVS export --------------------------------------------------------------


@router.get("/stats")
def stats_page(request: Request, sess: SessionDep) -> HTMLResponse:
    from alert_server.followup.api import monthly_for

    rows = monthly_for(request, sess.principal)
    peak = max((r.alerts for r in rows), default=0)
    with read_scope(engine_of(request)) as session:
        live = _live_context(session, sess.principal)
    return _page(request, sess, "stats.html", active="stats", rows=rows, peak=peak, **live)


@router.get("/stats.csv")
def stats_csv(request: Request, sess: SessionDep) -> Response:
    from alert_server.followup.api import _csv, monthly_for
    from alert_server.followup.stats import to_csv

    return _csv(to_csv(monthly_for(request, sess.principal)), "vigie-statistiques.csv")


@router.get("/alerts/{alert_id}/onvs.csv")
def alert_onvs_csv(request: Request, sess: SessionDep, alert_id: str) -> Response:
    from alert_server.followup import onvs
    from alert_server.followup.api import _csv, onvs_for

    return _csv(onvs.to_csv([onvs_for(request, sess.principal, alert_id)]), f"onvs-{alert_id}.csv")


# -- audit trail (admins) ------------------------------------------------------------------


AuditAction = Annotated[str | None, Query(max_length=40)]
AuditUser = Annotated[str | None, Query(max_length=64)]
AuditSince = Annotated[str | None, Query(max_length=10)]


def _audit_since(text: str | None) -> datetime | None:
    """A day (AAAA-MM-JJ, from the form's date field), midnight Paris time; None if unset or
    unreadable (the page then shows everything rather than an error)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=PARIS)
    except ValueError:
        return None


@router.get("/audit")
def audit_page(
    request: Request,
    sess: SessionDep,
    action: AuditAction = None,
    username: AuditUser = None,
    since: AuditSince = None,
) -> HTMLResponse:
    if sess.principal.role != ADMIN:
        return _page(request, sess, "forbidden.html", active="audit", status_code=403)
    with read_scope(engine_of(request)) as session:
        live = _live_context(session, sess.principal)
        records = audit_trail.query(
            session, since=_audit_since(since), action=action, username=username, limit=300
        )
    filters = {"action": action or "", "username": username or "", "since": since or ""}
    return _page(
        request, sess, "audit.html", active="audit", records=records, filters=filters, **live
    )


@router.get("/audit.csv")
def audit_csv(
    request: Request,
    sess: SessionDep,
    action: AuditAction = None,
    username: AuditUser = None,
    since: AuditSince = None,
) -> Response:
    from alert_server.followup.api import _csv

    if sess.principal.role != ADMIN:
        return _page(request, sess, "forbidden.html", active="audit", status_code=403)
    with read_scope(engine_of(request)) as session:
        records = audit_trail.query(
            session,
            since=_audit_since(since),
            action=action,
            username=username,
            limit=audit_trail.MAX_ROWS,
        )
    audit_trail.record_read(
        engine_of(request), request, sess.principal, audit_trail.AUDIT_EXPORT,
        rows=len(records), action_filter=action, via="console",
    )  # fmt: skip
    return _csv(audit_trail.to_csv(records), "vigie-journal.csv")
