"""Console sessions that do not drop a watch.

A dispatcher's console stays open for a whole shift and beyond; a session that silently ends
12 h after login turned the board into a bare login page in the middle of a night. While a
console page is open its script renews the session every minute (``POST
/dashboard/session``, CSRF-checked): the server moves the expiry to ``now + SESSION_TTL`` and
sends the cookie again. A closed console is not renewed, so an abandoned session still ends;
a logout, a disabled account or revoked tokens still end it at once (the lookup refuses it
before any renewal). If a session really ends, the page says so loudly and keeps what it
shows (console.js).
"""

from __future__ import annotations

import hmac
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlmodel import Session, select

from alert_server.dashboard.auth import (
    dashboard_config,
    engine_of,
    optional_session,
    set_session_cookie,
)
from alert_server.db import write_scope
from alert_server.users import service as users_service
from alert_server.users.models import WebSession
from vigie.timeutil import as_utc, rfc3339, utcnow

router = APIRouter(prefix="/dashboard", include_in_schema=False)


def renew(session: Session, *, token: str, now: datetime) -> datetime | None:
    """Extends a live session to ``now + SESSION_TTL``; None when it is no longer live."""
    if users_service.session_principal(session, token=token, now=now) is None:
        return None
    digest = users_service._token_digest(token)
    row = session.exec(select(WebSession).where(WebSession.token_sha256 == digest)).one()
    row.expires_at = max(as_utc(row.expires_at), now + users_service.SESSION_TTL)
    session.add(row)
    return row.expires_at


@router.post("/session")
def renew_session(request: Request) -> Response:
    sess = optional_session(request)
    if sess is None:
        return Response(status_code=401)
    submitted = request.headers.get("x-csrf-token", "")
    if not submitted or not hmac.compare_digest(submitted.encode(), sess.csrf_token.encode()):
        return Response(status_code=403)
    now = utcnow()
    with write_scope(engine_of(request)) as session:
        expires = renew(session, token=sess.token, now=now)
    if expires is None:
        return Response(status_code=401)
    response = JSONResponse({"expires_at": rfc3339(expires), "server_now": rfc3339(now)})
    set_session_cookie(response, dashboard_config(request), sess.token)
    return response
