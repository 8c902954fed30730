"""Security headers on every response (pages, API, static files, live stream).

A pure ASGI middleware rather than ``BaseHTTPMiddleware``: it only touches the response start
message, so the live stream keeps flowing chunk by chunk.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alert_server.dashboard.config import DashboardConfig

# FastAPI's interactive docs load Swagger UI / ReDoc from a CDN with an inline bootstrap
# script. They show the API schema only (no alert, no personal data), so they get a looser
# policy of their own instead of loosening the console's.
_DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")
_DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, config: DashboardConfig) -> None:
        self.app = app
        self.csp = config.content_security_policy()
        self.hsts = config.secure_cookies
        self.static_prefix = config.static_prefix + "/"
        self.app_csp = config.app_content_security_policy()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        csp = _DOCS_CSP if path in _DOCS_PATHS else self.csp
        # The worker's app (alert_server.phoneapp) needs the position and the broker.
        phone_app = path == "/app" or path.startswith("/app/")
        if phone_app:
            csp = self.app_csp
        static = path.startswith(self.static_prefix)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = csp
                headers["X-Frame-Options"] = "DENY"
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                headers["Cross-Origin-Opener-Policy"] = "same-origin"
                headers["Cross-Origin-Resource-Policy"] = "same-origin"
                headers["Permissions-Policy"] = (
                    "geolocation=(self), camera=(), microphone=()"
                    if phone_app
                    else "geolocation=(), camera=(), microphone=()"
                )
                if self.hsts:
                    headers["Strict-Transport-Security"] = "max-age=31536000"
                if not static and "cache-control" not in headers:
                    # Pages and API answers carry alerts and phone numbers: never cached.
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
