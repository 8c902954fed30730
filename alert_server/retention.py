"""Retention (CNIL): what is erased or pseudonymised, and when.

CNIL délibération 2015-165: employees may be geolocated for their safety, not tracked. So:

- positions outside alerts and sessions — the device's last position, the positions and memos
  (often a patient's address) of ended visits — are erased after ``position_days`` (30);
  a device with an open alert or a running visit keeps its position (it may be needed now);
- closed alerts (cancelled or resolved) are pseudonymised after ``alert_months`` (12): the
  device id is replaced by a random pseudonym (the link to the worker is gone), the raw payload
  and the note are cleared, precise positions and names removed from the alert, its timeline
  and its escalation record; the statistics fields stay (département, commune, kind, outcome,
  times of creation, first notification, acknowledgement, resolution);
- SMS sent to workers (notices, victim support) are deleted after ``position_days``;
- alerts still open or acknowledged after ``alert_months`` (forgotten, never closed) are
  closed as ``expired`` and pseudonymised like the others (nobody can still be helped by
  them, and their name, phone and position must not be kept forever);
- workers whose device was revoked ``alert_months`` ago lose their name and phone;
- inbound SMS (referents' replies: their numbers and words) go after ``alert_months``;
- the audit trail is kept for its own period, ``audit_months``, then deleted; expired
  console sessions (address, browser) go after ``position_days``.

``purge(dry_run=True)`` counts with the same conditions and changes nothing. Run daily by the
server's scheduler and by ``vigie purge``. Idempotent: a pseudonymised alert is never matched
again (its device id starts with ``anon-``).

A use case, not a stage: one run, one transaction and one report over the rows of every stage
(alerts, devices, visits, worker messages, console accounts) and of dispatch.
"""

from __future__ import annotations

import calendar
import json
import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, delete, func, not_, or_, select, update

from alert_server.alerts import lifecycle
from alert_server.alerts.models import Alert, AlertEvent
from alert_server.db import read_scope, write_scope
from alert_server.devices.models import Device, Worker
from alert_server.followup.models import FAILED, SENT, SKIPPED, WorkerMessage
from alert_server.sessions.models import ENDED, OPEN, VisitSession
from alert_server.users.models import AuditRecord, WebSession
from dispatch.models import (
    ACTIVE,
    CLOSED,
    KIND_VERIFY,
    Escalation,
    Event,
    Inbound,
    Notification,
    Verification,
)
from vigie.timeutil import rfc3339
from vigie.vocabulary import ACTIVE_STATES
from vigie.vocabulary import CLOSED_STATES as CLOSED_ALERT_STATES

log = logging.getLogger(__name__)

ALERT = Alert.__table__  # type: ignore[attr-defined]
EVENT = AlertEvent.__table__  # type: ignore[attr-defined]
DEVICE = Device.__table__  # type: ignore[attr-defined]
SESSIONS = VisitSession.__table__  # type: ignore[attr-defined]
MSG = WorkerMessage.__table__  # type: ignore[attr-defined]
ESC = Escalation.__table__  # type: ignore[attr-defined]
NOTIF = Notification.__table__  # type: ignore[attr-defined]
VERIF = Verification.__table__  # type: ignore[attr-defined]
DEVENT = Event.__table__  # type: ignore[attr-defined]
WORKER = Worker.__table__  # type: ignore[attr-defined]
INBOUND = Inbound.__table__  # type: ignore[attr-defined]
AUDIT = AuditRecord.__table__  # type: ignore[attr-defined]
WEB_SESSION = WebSession.__table__  # type: ignore[attr-defined]

PSEUDO_PREFIX = "anon-"
CLOSED_STATES = CLOSED_ALERT_STATES
ERASED_NAME = "(effacé)"
_RAW_PSEUDO = json.dumps({"pseudonymised": True})


@dataclass(frozen=True)
class RetentionPolicy:
    position_days: int = 30
    alert_months: int = 12
    audit_months: int = 12


@dataclass
class PurgeReport:
    device_positions: int = 0  # devices whose last position is erased
    ended_sessions: int = 0  # ended visits (positions, memo) deleted
    alerts_pseudonymised: int = 0
    worker_messages: int = 0  # SMS to workers deleted
    alerts_expired: int = 0  # forgotten open alerts closed as "expired" (then pseudonymised)
    workers_erased: int = 0  # workers of long-revoked devices: name and phone erased
    inbound_sms: int = 0  # referents' SMS replies deleted
    audit_rows: int = 0  # audit lines past their own period deleted
    web_sessions: int = 0  # ended console sessions (address, browser) deleted
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def months_before(now: datetime, months: int) -> datetime:
    """The same day and time ``months`` calendar months earlier (clamped to the month end)."""
    year, month = divmod(now.month - 1 - months, 12)
    year, month = now.year + year, month + 1
    day = min(now.day, calendar.monthrange(year, month)[1])
    return now.replace(year=year, month=month, day=day)


def _conditions(now: datetime, policy: RetentionPolicy) -> dict[str, Any]:
    cutoff = now - timedelta(days=policy.position_days)
    alert_cutoff = months_before(now, policy.alert_months)
    devices_busy = (
        select(SESSIONS.c.device_id)
        .where(SESSIONS.c.state.in_(OPEN))
        .union(
            # A live alert protects its device's position, unless it is itself past the
            # alerts' period (it is then expired in this run).
            select(ALERT.c.device_id).where(
                ALERT.c.state.in_(ACTIVE_STATES), ALERT.c.created_at >= alert_cutoff
            )
        )
    )
    stale_position = or_(DEVICE.c.last_pos_at < cutoff, DEVICE.c.last_pos_at.is_(None))
    return {
        "device": and_(
            DEVICE.c.last_lat.is_not(None) | DEVICE.c.last_pos_at.is_not(None),
            stale_position,
            DEVICE.c.device_id.not_in(devices_busy),
        ),
        # Ended visits without an alert: deleted whole (their memo is often a patient's
        # address). A visit that raised an alert is kept with the alert, and goes with it.
        "session": and_(
            SESSIONS.c.state == ENDED,
            SESSIONS.c.ended_at < cutoff,
            SESSIONS.c.alert_id.is_(None),
        ),
        "alert": and_(
            ALERT.c.state.in_(CLOSED_STATES),
            func.coalesce(ALERT.c.resolved_at, ALERT.c.created_at) < alert_cutoff,
            not_(ALERT.c.device_id.like(f"{PSEUDO_PREFIX}%")),
        ),
        "message": and_(
            MSG.c.created_at < cutoff,
            MSG.c.status.in_((SENT, FAILED, SKIPPED)),
        ),
        "stale_open": and_(
            ALERT.c.state.in_(ACTIVE_STATES),
            ALERT.c.created_at < alert_cutoff,
        ),
        "worker": and_(
            WORKER.c.name != ERASED_NAME,
            WORKER.c.id.in_(
                select(DEVICE.c.worker_id).where(
                    DEVICE.c.revoked_at.is_not(None), DEVICE.c.revoked_at < alert_cutoff
                )
            ),
            # Still on a live device (re-issued to the same person): kept.
            WORKER.c.id.not_in(select(DEVICE.c.worker_id).where(DEVICE.c.revoked_at.is_(None))),
        ),
        "inbound": INBOUND.c.received_at < alert_cutoff,
        # The audit trail has its own period; ended console sessions (address, browser) go
        # with the positions.
        "audit": AUDIT.c.at < months_before(now, policy.audit_months),
        "web_session": WEB_SESSION.c.expires_at < cutoff,
    }


def purge(
    engine: Engine,
    *,
    now: datetime,
    policy: RetentionPolicy,
    dry_run: bool = False,
) -> PurgeReport:
    """Erase and pseudonymise everything past its retention time (counts only with dry_run)."""
    cond = _conditions(now, policy)
    report = PurgeReport(dry_run=dry_run)
    scope = read_scope if dry_run else write_scope
    with scope(engine) as session:

        def count(table: Any, where: Any) -> int:
            return int(
                session.execute(select(func.count()).select_from(table).where(where)).scalar_one()
            )

        report.device_positions = count(DEVICE, cond["device"])
        report.ended_sessions = count(SESSIONS, cond["session"])
        report.alerts_pseudonymised = count(ALERT, cond["alert"])
        report.worker_messages = count(MSG, cond["message"])
        report.alerts_expired = count(ALERT, cond["stale_open"])
        # Expired alerts are pseudonymised in the same run.
        report.alerts_pseudonymised += report.alerts_expired
        report.workers_erased = count(WORKER, cond["worker"])
        report.inbound_sms = count(INBOUND, cond["inbound"])
        report.audit_rows = count(AUDIT, cond["audit"])
        report.web_sessions = count(WEB_SESSION, cond["web_session"])
        if dry_run:
            session.rollback()
            return report

        _expire(session, cond["stale_open"], now)
        session.execute(update(WORKER).where(cond["worker"]).values(name=ERASED_NAME, phone=""))
        session.execute(delete(INBOUND).where(cond["inbound"]))
        session.execute(delete(AUDIT).where(cond["audit"]))
        session.execute(delete(WEB_SESSION).where(cond["web_session"]))

        session.execute(
            update(DEVICE)
            .where(cond["device"])
            .values(
                last_lat=None, last_lon=None, last_acc_m=None, last_pos_at=None, last_pos_src=None
            )
        )
        session.execute(delete(SESSIONS).where(cond["session"]))
        session.execute(delete(MSG).where(cond["message"]))
        alert_rows = session.execute(
            select(ALERT.c.alert_id, ALERT.c.kind, ALERT.c.created_at, ALERT.c.departement).where(
                cond["alert"]
            )
        ).all()
        for alert_id, kind, created_at, departement in alert_rows:
            _pseudonymise(session, alert_id, kind, created_at, departement)
    log.info("retention purge: %s", report.as_dict())
    return report


def _expire(session: Any, where: Any, now: datetime) -> None:
    """Close forgotten open alerts as ``expired`` (a timeline line says why) and end their
    escalation if it somehow still runs; the pseudonymisation that follows finds them closed."""
    ids = [r[0] for r in session.execute(select(ALERT.c.alert_id).where(where)).all()]
    for alert_id in ids:
        lifecycle.expire(session, alert_id=alert_id, at=now)
        session.execute(
            update(ESC)
            .where(ESC.c.alert_id == alert_id, ESC.c.status == ACTIVE)
            .values(status=CLOSED, ended_at=now, end_reason="expired (retention)", updated_at=now)
        )


def _pseudonymise(
    session: Any, alert_id: str, kind: str, created_at: datetime, departement: str | None
) -> None:
    pseudonym = PSEUDO_PREFIX + uuid.uuid4().hex[:16]  # random: the link cannot be rebuilt
    session.execute(
        update(ALERT)
        .where(ALERT.c.alert_id == alert_id)
        .values(
            device_id=pseudonym,
            raw=_RAW_PSEUDO,
            note=None,
            device_ts=None,
            batt=None,
            pos_lat=None,
            pos_lon=None,
            pos_acc_m=None,
            pos_at=None,
            pos_src=None,
            acknowledged_by=None,
        )
    )
    # The timeline keeps its shape (what happened when), not who or where.
    session.execute(update(EVENT).where(EVENT.c.alert_id == alert_id).values(actor=None, detail={}))
    # The escalation's brief carried the worker's first name, phone and position.
    brief = {
        "alert_id": alert_id,
        "device_id": pseudonym,
        "kind": kind,
        "created_at": rfc3339(created_at),
        "departement": departement,
        "flags": ["pseudonymised"],
    }
    session.execute(update(ESC).where(ESC.c.alert_id == alert_id).values(brief=json.dumps(brief)))
    worker_phone = session.execute(
        select(VERIF.c.phone).where(VERIF.c.alert_id == alert_id)
    ).scalar()
    if worker_phone:
        session.execute(
            update(DEVENT)
            .where(DEVENT.c.alert_id == alert_id, DEVENT.c.phone == worker_phone)
            .values(phone=None, actor=None)
        )
    session.execute(update(VERIF).where(VERIF.c.alert_id == alert_id).values(phone=""))
    session.execute(
        update(NOTIF)
        .where(NOTIF.c.alert_id == alert_id, NOTIF.c.kind == KIND_VERIFY)
        .values(phone="", contact_name="")
    )
    session.execute(delete(MSG).where(MSG.c.alert_id == alert_id))
    session.execute(delete(SESSIONS).where(SESSIONS.c.alert_id == alert_id))
