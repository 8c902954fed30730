"""The console side of enrolment: an administrator shows a phone's one-time link as a QR code
on the device page (``POST /dashboard/devices/{device_id}/enrol``), for the worker to scan
there and then. The same codes as ``vigie devices enrol``; each issue is audited."""

from __future__ import annotations

from typing import Annotated

import segno
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from alert_server.dashboard.auth import check_csrf, engine_of
from alert_server.dashboard.pages import SessionDep, _page
from alert_server.db import write_scope
from alert_server.devices import enrol
from alert_server.users.api import client_of
from alert_server.users.schemas import ADMIN
from alert_server.users.service import audit
from vigie.timeutil import utcnow

router = APIRouter(prefix="/dashboard", include_in_schema=False)


@router.post("/devices/{device_id}/enrol")
def device_enrol(
    request: Request,
    sess: SessionDep,
    device_id: str,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> HTMLResponse:
    check_csrf(sess, csrf_token)
    if sess.principal.role != ADMIN:
        return _page(request, sess, "forbidden.html", active="devices", status_code=403)
    now = utcnow()
    public_url = request.app.state.runtime.settings.public_url
    try:
        with write_scope(engine_of(request)) as session:
            issued = enrol.issue(session, device_id=device_id, public_url=public_url, now=now)
            client = client_of(request)
            audit(
                session,
                action="device.enrol_link",
                now=now,
                actor=sess.principal.username,
                target=device_id,
                ip=client.ip,
                user_agent=client.user_agent,
            )
    except enrol.EnrolmentError as exc:
        return _page(
            request,
            sess,
            "device_enrol.html",
            active="devices",
            status_code=exc.status,
            device_id=device_id,
            error=exc.message,
        )
    qr = segno.make(issued.enrol_url, error="m").svg_data_uri(
        scale=6, border=2, dark="black", light="white"
    )
    return _page(
        request,
        sess,
        "device_enrol.html",
        active="devices",
        device_id=device_id,
        enrol_url=issued.enrol_url,
        expires_at=issued.expires_at,
        qr=qr,
        error=None,
    )
