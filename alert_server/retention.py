"""The whole retention run (CNIL): the follow-up stage's purge plus the users' own rows.

``alert_server/followup/retention.py`` erases and pseudonymises the alerts, positions, visits
and messages; the audit trail (kept ``audit_months``) and the ended console sessions (address
and browser, kept ``position_days``) belong to the users stage, which the follow-up stage may
not import. This use case hands those tables to the same purge, so that one run, one
transaction and one report cover everything (``vigie purge`` and the daily scheduler call it).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine

from alert_server.followup.retention import (
    AgedRows,
    PurgeReport,
    RetentionPolicy,
    months_before,
)
from alert_server.followup.retention import purge as purge_followup
from alert_server.users.models import AuditRecord, WebSession

AUDIT = AuditRecord.__table__  # type: ignore[attr-defined]
WEB_SESSION = WebSession.__table__  # type: ignore[attr-defined]


def users_rows(now: datetime, policy: RetentionPolicy) -> list[AgedRows]:
    """The users' rows past their period at ``now``."""
    return [
        AgedRows("audit_rows", AUDIT.c.at, months_before(now, policy.audit_months)),
        AgedRows(
            "web_sessions", WEB_SESSION.c.expires_at, now - timedelta(days=policy.position_days)
        ),
    ]


def purge(
    engine: Engine, *, now: datetime, policy: RetentionPolicy, dry_run: bool = False
) -> PurgeReport:
    """Erase and pseudonymise everything past its retention time (counts only with dry_run)."""
    return purge_followup(
        engine, now=now, policy=policy, dry_run=dry_run, aged=users_rows(now, policy)
    )
