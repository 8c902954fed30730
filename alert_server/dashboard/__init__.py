"""The dispatcher console (server-rendered French pages, live stream) and the HTTP API.

``install_dashboard(app, settings)`` is the one call the app factory makes: it mounts the API
routers, the pages, the live stream, the static files and the security headers.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from alert_server.alerts import api as alerts_api
from alert_server.alerts.api import TimelineSource
from alert_server.dashboard import geo, pages, stream
from alert_server.dashboard.auth import install_auth_handlers
from alert_server.dashboard.config import STATIC_DIR, DashboardConfig
from alert_server.dashboard.security import SecurityHeaders
from alert_server.settings import Settings
from alert_server.users import api as users_api


def install_dashboard(
    app: FastAPI, settings: Settings, *, timeline_sources: Sequence[TimelineSource] = ()
) -> None:
    """Mount the console and the API; ``timeline_sources``: what else an alert's timeline
    shows besides its own events (kept on this app, never in a module-level list)."""
    # (A placeholder VIGIE_SECRET_KEY never gets here: alert_server.safety refuses it.)
    config = DashboardConfig.from_settings(settings)
    app.state.dashboard = config
    app.state.timeline_sources = tuple(timeline_sources)
    app.add_middleware(SecurityHeaders, config=config)
    install_auth_handlers(app)
    app.include_router(users_api.router)
    app.include_router(alerts_api.router)
    app.include_router(pages.router)
    app.include_router(pages.root_router)
    app.include_router(stream.router)
    app.include_router(geo.router)
    app.mount(config.static_prefix, StaticFiles(directory=STATIC_DIR), name="dashboard-static")
