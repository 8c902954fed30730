"""``POST /api/token`` and the API's bearer-token authentication (thin; logic in service.py).

The API accepts bearer tokens only, never the dashboard's session cookie: a cookie is sent by
the browser on its own, a bearer token is not, so the API needs no CSRF protection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from sqlalchemy import Engine

from alert_server.alerts.schemas import Problem, Token
from alert_server.db import read_scope, write_scope
from alert_server.users import service
from alert_server.users.schemas import Principal
from vigie.timeutil import utcnow

router = APIRouter(prefix="/api", tags=["authentification"])

_bearer = OAuth2PasswordBearer(tokenUrl="/api/token", auto_error=False)

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Jeton absent, invalide ou expiré"}
}


@dataclass(frozen=True, slots=True)
class Client:
    """Where a request comes from, for the audit trail."""

    ip: str
    user_agent: str | None


def client_of(request: Request) -> Client:
    # Behind a reverse proxy this is the proxy unless uvicorn is told to trust its
    # X-Forwarded-For (--forwarded-allow-ips); the audit then records the proxy's address.
    ip = request.client.host if request.client else "?"
    return Client(ip=ip[:45], user_agent=(request.headers.get("user-agent") or "")[:300] or None)


def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.runtime.engine
    return engine


def secret_of(request: Request) -> str:
    return str(request.app.state.runtime.settings.secret_key.get_secret_value())


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def api_principal(request: Request, token: Annotated[str | None, Depends(_bearer)]) -> Principal:
    """The caller of an API route, from its bearer token (401 otherwise)."""
    if not token:
        raise _unauthorized("Authentification requise")
    with read_scope(engine_of(request)) as session:
        principal = service.principal_for_token(
            session, secret=secret_of(request), token=token, now=utcnow()
        )
    if principal is None:
        raise _unauthorized("Jeton invalide ou expiré")
    return principal


@router.post(
    "/token",
    response_model=Token,
    summary="Obtenir un jeton d'accès (formulaire OAuth2 « password »)",
    responses={
        401: {"model": Problem, "description": "Identifiant ou mot de passe incorrect"},
        429: {"model": Problem, "description": "Trop de tentatives ; réessayer plus tard"},
    },
)
def issue_token(
    request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> Token | JSONResponse:
    client = client_of(request)
    now = utcnow()
    attempted = service.normalise_username(form.username)[:64]
    with write_scope(engine_of(request)) as session:
        result = service.login(
            session, username=form.username, password=form.password, ip=client.ip, now=now
        )
        if result.status == "ok":
            assert result.principal is not None
            service.audit(
                session,
                action="token.issued",
                now=now,
                actor=result.principal.username,
                ip=client.ip,
                user_agent=client.user_agent,
            )
        else:
            service.audit(
                session,
                action=f"login.{'throttled' if result.status == 'throttled' else 'failed'}",
                now=now,
                target=attempted,
                ip=client.ip,
                user_agent=client.user_agent,
                via="api",
            )
    if result.status == "throttled":
        return JSONResponse(
            {"detail": "Trop de tentatives de connexion ; réessayez dans quelques minutes"},
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(int(service.LOGIN_WINDOW.total_seconds()))},
        )
    if result.status == "bad" or result.principal is None:
        raise _unauthorized("Identifiant ou mot de passe incorrect")
    token = service.issue_api_token(secret_of(request), result.principal, now=now)
    return Token(access_token=token, expires_in=int(service.API_TOKEN_TTL.total_seconds()))
