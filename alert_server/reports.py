"""Follow-up reads for the console and exports: ONVS pre-fill of an alert, monthly statistics.

Keyword-only arguments after the session. The pure functions of ``followup/onvs.py`` and
``followup/stats.py`` do the work; this use case reads the rows they need from the stages that
own them (the alert, its device and worker, the visit's memo, the commune's postal code) and
from dispatch (the first notification sent).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from alert_server.alerts import service as alerts
from alert_server.alerts.models import Alert
from alert_server.devices import service as devices
from alert_server.followup import onvs, stats
from alert_server.geo import service as geo
from alert_server.sessions import service as visits
from dispatch.models import KIND_ALERT, Notification
from vigie.timeutil import as_utc

ALERT = Alert.__table__  # type: ignore[attr-defined]
NOTIF = Notification.__table__  # type: ignore[attr-defined]

__all__ = [
    "alert_facts",
    "monthly_stats",
    "monthly_stats_csv",
    "onvs_input",
    "onvs_prefill",
    "onvs_prefill_csv",
]


# --- ONVS --------------------------------------------------------------------------------


def onvs_input(session: Session, *, alert_id: str) -> onvs.OnvsInput | None:
    """Everything Vigie knows for the ONVS form of one alert (None: unknown alert)."""
    alert = alerts.get_alert(session, alert_id=alert_id)
    if alert is None:
        return None
    pair = devices.device_and_worker(session, alert.device_id)
    device, worker = pair if pair is not None else (None, None)
    return onvs.OnvsInput(
        alert_id=alert.alert_id,
        kind=alert.kind,
        created_at=as_utc(alert.created_at),
        worker_role=worker.role if worker else None,
        commune_nom=alert.commune_nom,
        commune_code=alert.commune_code,
        postal_code=geo.postal_code(session, alert.commune_code),
        site_label=device.site_label if device else None,
        session_memo=visits.memo_for_alert(session, alert),
        outcome=alert.outcome,
        note=alert.note,
        acknowledged_by=alert.acknowledged_by,
        duress=alert.duress,
    )


def onvs_prefill(session: Session, *, alert_id: str) -> dict[str, Any] | None:
    """The ONVS libéral form pre-filled from the alert, as a JSON-ready dict (None: unknown).

    Vigie never submits it: the worker (or her Ordre, with her consent) completes and sends it.
    """
    data = onvs_input(session, alert_id=alert_id)
    return onvs.prefill(data) if data is not None else None


def onvs_prefill_csv(session: Session, *, alert_ids: list[str]) -> str:
    """The same as CSV (``;``-separated), one line per known alert, in the given order."""
    rows = [r for a in alert_ids if (r := onvs_prefill(session, alert_id=a)) is not None]
    return onvs.to_csv(rows)


# --- statistics ------------------------------------------------------------------------------


def alert_facts(
    session: Session, *, since: datetime | None = None, until: datetime | None = None
) -> list[stats.AlertFacts]:
    """One row per alert created in [since, until): département, kind, outcome, creation,
    first notification actually sent to a responder (dispatch), acknowledgement."""
    first_sent = (
        select(NOTIF.c.alert_id, func.min(NOTIF.c.sent_at).label("first_at"))
        .where(NOTIF.c.kind == KIND_ALERT, NOTIF.c.sent_at.is_not(None))
        .group_by(NOTIF.c.alert_id)
        .subquery()
    )
    stmt = select(
        ALERT.c.departement,
        ALERT.c.kind,
        ALERT.c.outcome,
        ALERT.c.created_at,
        first_sent.c.first_at,
        ALERT.c.acknowledged_at,
    ).select_from(ALERT.outerjoin(first_sent, first_sent.c.alert_id == ALERT.c.alert_id))
    if since is not None:
        stmt = stmt.where(ALERT.c.created_at >= since)
    if until is not None:
        stmt = stmt.where(ALERT.c.created_at < until)
    stmt = stmt.order_by(ALERT.c.created_at, ALERT.c.id)
    return [
        stats.AlertFacts(
            departement=dep,
            kind=kind,
            outcome=outcome,
            created_at=as_utc(created),
            first_notification_at=as_utc(first) if first is not None else None,
            acknowledged_at=as_utc(acked) if acked is not None else None,
        )
        for dep, kind, outcome, created, first, acked in session.execute(stmt).all()
    ]


def monthly_stats(
    session: Session, *, since: datetime | None = None, until: datetime | None = None
) -> list[stats.MonthStats]:
    return stats.monthly(alert_facts(session, since=since, until=until))


def monthly_stats_csv(
    session: Session, *, since: datetime | None = None, until: datetime | None = None
) -> str:
    """The monthly figures per département as CSV (for the pacts' yearly review)."""
    return stats.to_csv(monthly_stats(session, since=since, until=until))
