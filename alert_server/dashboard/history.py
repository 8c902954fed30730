"""The history of alerts: every alert the account may see, searchable, page after page.

The live board shows what is going on (at most ``BOARD_LIMIT`` rows, waiting alerts first);
the history is where a dispatcher finds last week's alert of a worker, or an alert by its
identifier, a device, a commune or a département, with no cap on how far back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, or_
from sqlmodel import col, select

from alert_server.alerts.api import scope_clause
from alert_server.alerts.models import Alert
from alert_server.dashboard import pages
from alert_server.dashboard.auth import engine_of
from alert_server.db import read_scope

router = APIRouter(prefix="/dashboard", include_in_schema=False)

PAGE_SIZE = 50


@dataclass(frozen=True, slots=True)
class HistoryPage:
    alerts: list[Alert]
    total: int
    page: int
    pages: int
    q: str


def search(request: Request, q: str, page: int) -> HistoryPage:
    sess = pages.page_session(request)
    stmt = select(Alert).where(scope_clause(sess.principal)).where(col(Alert.incident_of).is_(None))
    term = q.strip()
    if term:
        # Searched as typed: "_" and "%" are letters here (device ids have underscores), not
        # LIKE wildcards.
        escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like = f"%{escaped}%"
        stmt = stmt.where(
            or_(
                *(
                    col(column).ilike(like, escape="\\")
                    for column in (
                        Alert.alert_id,
                        Alert.device_id,
                        Alert.commune_nom,
                        Alert.departement,
                        Alert.acknowledged_by,
                    )
                )
            )
        )
    with read_scope(engine_of(request)) as session:
        total = int(session.exec(select(func.count()).select_from(stmt.subquery())).one())
        pages_count = max(1, -(-total // PAGE_SIZE))
        page = min(max(1, page), pages_count)
        rows = list(
            session.exec(
                stmt.order_by(col(Alert.created_at).desc(), col(Alert.id).desc())
                .offset((page - 1) * PAGE_SIZE)
                .limit(PAGE_SIZE)
            )
        )
    return HistoryPage(alerts=rows, total=total, page=page, pages=pages_count, q=term)


@router.get("/history")
def history_page(
    request: Request,
    q: Annotated[str, Query(max_length=100)] = "",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> HTMLResponse:
    sess = pages.page_session(request)
    result = search(request, q, page)
    return pages._page(request, sess, "history.html", active="history", h=result)
