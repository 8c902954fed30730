"""The audit trail as the organisation's DPO and the CNIL ask for it: who read which
personal data and who changed what, when, from where.

Every read of personal data (alert lists with positions, alert detail, ONVS export,
statistics) writes one row here, from the API and from the console alike; changes write
theirs in their own transaction (``users.service.audit``). Admins read the trail with
``GET /api/audit`` (operations.md 1.1) or the console's journal page, filtered and exported
as CSV (itself an audited read).
"""

from __future__ import annotations

import csv
import getpass
import io
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from alert_server.db import read_scope, write_scope
from alert_server.users import service as users_service
from alert_server.users.api import UNAUTHORIZED, api_principal, client_of, engine_of
from alert_server.users.models import AuditRecord
from alert_server.users.schemas import ADMIN, Principal
from vigie.timeutil import as_utc, utcnow

# Names of the reads of personal data (the changes keep their existing names).
ALERT_LIST = "alert.list"
ALERT_VIEW = "alert.view"
ONVS_EXPORT = "onvs.export"
STATS_EXPORT = "stats.export"
AUDIT_EXPORT = "audit.export"

MAX_ROWS = 10_000


def cli_actor() -> str:
    """The audit's "who" for a command run on the server: the system account that ran it."""
    try:
        return f"cli:{getpass.getuser()}"[:64]
    except Exception:  # no login name (containers): still says it came from the CLI
        return "cli:?"


def record_cli(
    session: Session, action: str, *, target: str | None, command: str, **detail: Any
) -> None:
    """The audit row of a CLI change, in the change's own transaction."""
    users_service.audit(
        session, action=action, now=utcnow(), actor=cli_actor(), target=target,
        user_agent=command, **detail,
    )  # fmt: skip


def record_read(
    engine: Engine,
    request: Request,
    principal: Principal,
    action: str,
    *,
    target: str | None = None,
    **detail: Any,
) -> None:
    """One audit row for a read of personal data by ``principal``. Its own short transaction,
    opened after the read's (never nested: SQLite would wait for itself)."""
    client = client_of(request)
    with write_scope(engine) as session:
        users_service.audit(
            session,
            action=action,
            now=utcnow(),
            actor=principal.username,
            target=target,
            ip=client.ip,
            user_agent=client.user_agent,
            **detail,
        )


def query(
    session: Session,
    *,
    since: datetime | None = None,
    action: str | None = None,
    username: str | None = None,
    limit: int = 1000,
) -> list[AuditRecord]:
    """Newest first. ``action`` is exact, or a prefix when it ends with ``*`` (``alert.*``)."""
    stmt = select(AuditRecord)
    if since is not None:
        stmt = stmt.where(col(AuditRecord.at) >= as_utc(since))
    if action:
        if action.endswith("*"):
            stmt = stmt.where(col(AuditRecord.action).startswith(action[:-1], autoescape=True))
        else:
            stmt = stmt.where(AuditRecord.action == action)
    if username:
        stmt = stmt.where(AuditRecord.actor == username)
    stmt = stmt.order_by(col(AuditRecord.at).desc(), col(AuditRecord.id).desc()).limit(limit)
    return list(session.exec(stmt))


def as_json(record: AuditRecord) -> dict[str, Any]:
    return {
        "at": as_utc(record.at).isoformat().replace("+00:00", "Z"),
        "username": record.actor,
        "action": record.action,
        "target": record.target,
        "ip": record.ip,
    }


def to_csv(records: Sequence[AuditRecord]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow(["date (UTC)", "compte", "action", "objet", "adresse IP", "navigateur"])
    for r in records:
        j = as_json(r)
        writer.writerow(
            [j["at"], j["username"] or "", r.action, r.target or "", r.ip or "", r.user_agent or ""]
        )
    return out.getvalue()


router = APIRouter(prefix="/api", tags=["journal"])


@router.get(
    "/audit",
    summary="Journal d'audit (administrateurs), le plus récent d'abord",
    responses={**UNAUTHORIZED, 403: {"description": "Réservé aux administrateurs"}},
)
def api_audit(
    request: Request,
    principal: Annotated[Principal, Depends(api_principal)],
    since: Annotated[datetime | None, Query(description="Date ISO 8601 (incluse)")] = None,
    action: Annotated[
        str | None, Query(max_length=40, description="Action exacte, ou préfixe suivi de *")
    ] = None,
    username: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_ROWS)] = 1000,
) -> list[dict[str, Any]]:
    if principal.role != ADMIN:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Réservé aux administrateurs")
    engine = engine_of(request)
    with read_scope(engine) as session:
        rows = [
            as_json(r)
            for r in query(session, since=since, action=action, username=username, limit=limit)
        ]
    record_read(engine, request, principal, AUDIT_EXPORT, rows=len(rows), action_filter=action)
    return rows
