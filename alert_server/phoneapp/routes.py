"""HTTP side of the worker's app: the static app under ``/app/`` and the redemption of a
one-time enrolment code (``POST /app/api/enrol``).

The app page itself is the same file for ``/app/`` and ``/app/enrol?code=…``: the code is read
and redeemed by the page's script with a POST, never by the GET, so a link preview (a
messaging app fetching the URL to draw a thumbnail) cannot spend the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from alert_server.db import write_scope
from alert_server.devices import enrol
from alert_server.users.service import audit
from vigie.timeutil import utcnow
from vigie.vocabulary import for_browsers

STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/app"

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def _page(name: str, media_type: str | None = None) -> FileResponse:
    # Always revalidated: the service worker decides what is served offline.
    return FileResponse(STATIC / name, media_type=media_type, headers={"Cache-Control": "no-cache"})


@router.get("/")
def index() -> FileResponse:
    return _page("index.html")


@router.get("/enrol")
def enrol_page() -> FileResponse:
    return _page("index.html")


@router.get("/limites")
def limits_page() -> FileResponse:
    return _page("limites.html")


@router.get("/sw.js")
def service_worker() -> FileResponse:
    return _page("sw.js", "text/javascript")


# The protocol's words for app.js, from vigie/vocabulary.py (cached offline by the service
# worker with the rest of the app).
VOCABULARY_JS = (
    "/* Vigie: the protocol's words, written once in vigie/vocabulary.py. */\n"
    f"self.VIGIE_WORDS = Object.freeze({json.dumps(for_browsers(), sort_keys=True)});\n"
)


@router.get("/vocabulary.js")
def vocabulary() -> Response:
    return Response(
        VOCABULARY_JS, media_type="text/javascript", headers={"Cache-Control": "no-cache"}
    )


@router.get("/manifest.webmanifest")
def manifest() -> FileResponse:
    return _page("manifest.webmanifest", "application/manifest+json")


class EnrolRequest(BaseModel):
    code: str = Field(min_length=1, max_length=200)


@router.post("/api/enrol")
def redeem(body: EnrolRequest, request: Request) -> JSONResponse:
    """Spend the code and give the phone its device's MQTT credentials (a new password)."""
    runtime: Any = request.app.state.runtime
    settings = runtime.settings
    if not settings.mqtt_ws_url:
        return JSONResponse(
            {
                "detail": "Inscription impossible pour l'instant : l'adresse WebSocket du "
                "broker n'est pas configurée sur le serveur (VIGIE_MQTT_WS_URL)."
            },
            status_code=503,
        )
    now = utcnow()
    try:
        with write_scope(runtime.engine) as session:
            device_id = enrol.spend(session, code=body.code.strip(), now=now)
            # Written before the commit: if the password file cannot be written, the code is
            # not spent and the worker can try again.
            creds = enrol.give_credentials(
                device_id,
                passwd_file=settings.broker_passwd_file,
                pid_file=settings.broker_pid_file,
            )
            audit(
                session,
                action="device.enrol",
                now=now,
                target=device_id,
                ip=request.client.host if request.client else None,
                user_agent=request.headers.get("user-agent"),
            )
    except enrol.EnrolmentError as exc:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)
    return JSONResponse(
        {
            "device_id": creds.device_id,
            "mqtt_username": creds.mqtt_username,
            "mqtt_password": creds.mqtt_password,
            "ws_url": settings.mqtt_ws_url,
            # The broker's MQTT version (the demo's embedded broker speaks 3.1.1 only).
            "mqtt_version": 4 if settings.mqtt_protocol == "3.1.1" else 5,
        }
    )


def install_phone_app(app: FastAPI) -> None:
    """Mount the worker's app: pages, service worker, manifest, static files, enrolment."""

    @app.get(PREFIX, include_in_schema=False)
    def _bare() -> Response:
        return RedirectResponse(PREFIX + "/", status_code=308)

    from alert_server.phoneapp import console  # the console's pages exist by now

    app.include_router(router)
    app.include_router(console.router)
    app.mount(PREFIX + "/static", StaticFiles(directory=STATIC), name="phoneapp-static")
