"""The fleet at a glance: devices online and visits in progress, for the devices page's map.

Devices are not tied to a département (a nurse crosses borders all day): like the devices
page, only accounts without a restriction see the fleet. A visit's memo (often a patient's
address) is not sent: the map shows where the device last was and since when the visit runs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlmodel import Session, col, select

from alert_server.dashboard import pages
from alert_server.dashboard.auth import engine_of
from alert_server.db import read_scope
from alert_server.devices.models import Device
from alert_server.sessions.models import RUNNING, WARNED, VisitSession
from vigie.timeutil import as_utc, rfc3339, utcnow

router = APIRouter(prefix="/dashboard", include_in_schema=False)


def fleet(session: Session, now: datetime) -> dict[str, Any]:
    devices = []
    for d in session.exec(select(Device).where(col(Device.revoked_at).is_(None))):
        seen = as_utc(d.last_seen_at) if d.last_seen_at else None
        if not d.online or seen is None or now - seen > pages.STALE_AFTER:
            continue
        if d.last_lat is None or d.last_lon is None:
            continue
        devices.append(
            {
                "device_id": d.device_id,
                "lat": d.last_lat,
                "lon": d.last_lon,
                "acc_m": d.last_acc_m,
                "at": rfc3339(as_utc(d.last_pos_at)) if d.last_pos_at else None,
            }
        )
    visits = []
    for v in session.exec(
        select(VisitSession)
        .where(col(VisitSession.state).in_(RUNNING))
        .order_by(col(VisitSession.started_at))
    ):
        visits.append(
            {
                "device_id": v.device_id,
                "state": v.state,
                # Said in French by the page (no visit state spelled in the script).
                "status_fr": (
                    "fin dépassée : avertissement envoyé" if v.state == WARNED else "en cours"
                ),
                "started_at": rfc3339(as_utc(v.started_at)),
                "expected_end": rfc3339(as_utc(v.expected_end)) if v.expected_end else None,
                "lat": v.pos_lat,
                "lon": v.pos_lon,
            }
        )
    return {"devices": devices, "visits": visits, "server_now": rfc3339(now)}


@router.get("/fleet.json")
def fleet_json(request: Request) -> Response:
    sess = pages.page_session(request)
    if sess.principal.restricted:
        return Response(status_code=403)
    with read_scope(engine_of(request)) as session:
        body = fleet(session, utcnow())
    return JSONResponse(body)
