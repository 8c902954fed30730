"""Page authentication: the session cookie, the CSRF synchronizer token, login redirects.

- The session cookie is HttpOnly (scripts cannot read it), SameSite=Strict (no other site
  can make the browser send it) and Secure when the public URL is https; it holds a random
  token whose hash identifies a server-side session (``users.models.WebSession``).
- Every state-changing form carries the session's CSRF token, compared in constant time
  (synchronizer token pattern). SameSite alone is not enough: it does not cover same-site
  subdomains nor older browsers.
- The login form, which has no session yet, uses a double-submit token: a random value in a
  short-lived cookie and the same value in the form.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine

from alert_server.dashboard.config import DashboardConfig
from alert_server.db import read_scope
from alert_server.users import service
from alert_server.users.schemas import Principal
from vigie.timeutil import utcnow

LOGIN_COOKIE_MAX_AGE_S = 1800


@dataclass(frozen=True, slots=True)
class PageSession:
    principal: Principal
    csrf_token: str
    token: str


class LoginRequired(Exception):
    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class CsrfRejected(Exception):
    pass


def dashboard_config(request: Request) -> DashboardConfig:
    config: DashboardConfig = request.app.state.dashboard
    return config


def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.runtime.engine
    return engine


def lookup_session(engine: Engine, token: str | None) -> PageSession | None:
    if not token:
        return None
    with read_scope(engine) as session:
        found = service.session_principal(session, token=token, now=utcnow())
    if found is None:
        return None
    row, principal = found
    return PageSession(principal=principal, csrf_token=row.csrf_token, token=token)


def optional_session(request: Request) -> PageSession | None:
    token = request.cookies.get(dashboard_config(request).session_cookie)
    return lookup_session(engine_of(request), token)


def page_session(request: Request) -> PageSession:
    """Dependency of every page: the session, or a redirect to the login page."""
    found = optional_session(request)
    if found is None:
        path = request.url.path
        if request.url.query:
            path += "?" + request.url.query
        raise LoginRequired(path if request.method == "GET" else dashboard_config(request).prefix)
    return found


def check_csrf(sess: PageSession, submitted: str | None) -> None:
    if not submitted or not hmac.compare_digest(submitted.encode(), sess.csrf_token.encode()):
        raise CsrfRejected()


def safe_next(config: DashboardConfig, value: str | None) -> str:
    """Where to go after login: only a path of this console (no open redirect)."""
    home = config.prefix + "/"
    if not value or not value.startswith(config.prefix) or value.startswith("//"):
        return home
    if any(c in value for c in ("\\", "\r", "\n")) or "://" in value:
        return home
    return value


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


def set_session_cookie(response: Response, config: DashboardConfig, token: str) -> None:
    response.set_cookie(
        config.session_cookie,
        token,
        max_age=int(service.SESSION_TTL.total_seconds()),
        path="/",
        httponly=True,
        samesite="strict",
        secure=config.secure_cookies,
    )


def clear_session_cookie(response: Response, config: DashboardConfig) -> None:
    response.delete_cookie(
        config.session_cookie,
        path="/",
        httponly=True,
        samesite="strict",
        secure=config.secure_cookies,
    )


def set_login_cookie(response: Response, config: DashboardConfig, token: str) -> None:
    response.set_cookie(
        config.login_cookie,
        token,
        max_age=LOGIN_COOKIE_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=config.secure_cookies,
    )


def install_auth_handlers(app: FastAPI) -> None:
    async def login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        config = dashboard_config(request)
        target = f"{config.prefix}/login?next={quote(exc.next_path, safe='')}"
        return RedirectResponse(target, status_code=303)

    async def csrf_rejected(request: Request, exc: Exception) -> Response:
        return HTMLResponse(
            "<!doctype html><html lang='fr'><meta charset='utf-8'><title>Refusé</title>"
            "<p>Jeton de sécurité invalide ou expiré : rechargez la page et recommencez.</p>"
            f"<p><a href='{dashboard_config(request).prefix}/'>Retour à la console</a></p>",
            status_code=403,
        )

    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(CsrfRejected, csrf_rejected)
