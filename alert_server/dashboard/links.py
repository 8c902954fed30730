"""Links sent to people (operations.md 1.1, "Links sent to people").

Every alert SMS carries ``{VIGIE_PUBLIC_URL}/alerts/{alert_id}``: a referent reads it on a
phone, often at night, and must land on that alert. The link stays short and stable (it is
in SMS already sent) and leads to the console's page for the alert; without a session the
console's login takes over and comes back to the alert afterwards (``next``).
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from alert_server.dashboard.auth import dashboard_config

router = APIRouter(include_in_schema=False)


@router.get("/alerts/{alert_id}")
def alert_link(request: Request, alert_id: str) -> RedirectResponse:
    target = f"{dashboard_config(request).prefix}/alerts/{quote(alert_id, safe='')}"
    return RedirectResponse(target, status_code=303)
