"""The alert server's side of dispatch's hooks: ``DispatchHooks`` (acknowledged, exhausted)
and ``VerificationHooks`` (the worker's "I am fine" on the verification call).

Why apart from the pipeline: dispatch is built with its hooks (nothing is attached to it
afterwards), and the pipeline is built with dispatch. The hooks need only the database and
the downlink, so they live here and both can be built in order: bridge → dispatcher →
pipeline.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session

from alert_server.alerts import lifecycle
from alert_server.alerts import service as alerts
from alert_server.alerts.models import Alert
from alert_server.db import read_scope
from alert_server.downlink import AlertRef, Downlink
from vigie.vocabulary import DownlinkType

log = logging.getLogger("alert_server.pipeline")

# What the device is told of who took its alert: a service's name, never a person's number.
CONSOLE_SERVICE_NAME = "Centre de veille Vigie"
_FORCE_LABEL = {"PN": "Police", "GN": "Gendarmerie"}


def service_name(alert: Alert | None, by_name: str, via: str) -> str:
    """The name the device shows for whoever took the alert."""
    if via not in ("sms", "voice"):
        return CONSOLE_SERVICE_NAME
    force = _FORCE_LABEL.get(alert.force or "") if alert is not None else None
    return f"{force} — {by_name}" if force and force not in by_name else by_name


def incident_refs(session: Session, alert_id: str) -> list[AlertRef]:
    """The incident's alerts as their device knows them (the first one, then the presses
    attached to it)."""
    first = alerts.get_alert(session, alert_id=alert_id)
    if first is None:
        return []
    members = alerts.incident_members(session, alert_id=first.alert_id)
    return [AlertRef.of(a) for a in (first, *members)]


class DispatchBridge:
    """Implements ``dispatch.hooks.DispatchHooks`` for the alert server."""

    def __init__(self, engine: Engine, *, downlink: Downlink) -> None:
        self.engine = engine
        self.downlink = downlink

    def on_acknowledged(
        self,
        session: Session,
        alert_id: str,
        by_name: str,
        by_phone: str | None,
        via: str,
        at: datetime,
    ) -> None:
        # Same transaction as dispatch's own acknowledgement: all or nothing.
        lifecycle.acknowledge(session, alert_id=alert_id, actor=by_name, via=via, at=at)

    def after_acknowledged(
        self, alert_id: str, by_name: str, by_phone: str | None, via: str, at: datetime
    ) -> None:
        with read_scope(self.engine) as session:
            refs = incident_refs(session, alert_id)
            by = service_name(alerts.get_alert(session, alert_id=alert_id), by_name, via)
        for ref in refs:
            self.downlink.alert(ref, DownlinkType.ALERT_ACKNOWLEDGED, by=by)
        log.info("alert acknowledged alert_id=%s by=%s via=%s", alert_id, by_name, via)

    def on_exhausted(self, session: Session, alert_id: str, at: datetime) -> None:
        alert = alerts.get_alert(session, alert_id=alert_id)
        if alert is not None:
            lifecycle.exhausted(session, alert=alert, at=at)

    def after_exhausted(self, alert_id: str, at: datetime) -> None:
        log.error("escalation exhausted, nobody acknowledged alert_id=%s", alert_id)

    def after_change(self, alert_id: str) -> None:
        return None


class WorkerOkBridge:
    """Implements ``dispatch.verification.VerificationHooks``.

    When the worker presses 1 ("I am fine") on the call to her own phone before the deadline,
    dispatch stands the escalation down and calls ``on_worker_ok`` in the same transaction:
    the alert is recorded as cancelled, outcome ``false_alarm``, by the worker, on its
    timeline. After the commit the device receives ``alert.cancelled`` (its pre-alarm display
    can stop).
    """

    def __init__(self, engine: Engine, downlink: Downlink) -> None:
        self.engine = engine
        self.downlink = downlink

    def on_worker_ok(self, session: Session, alert_id: str, at: datetime) -> None:
        alert = alerts.get_alert(session, alert_id=alert_id)
        if alert is None:
            return
        # Cancelled with the outcome pre-filled for the statistics (a dispatcher resolving it
        # later may change it), unless under duress or already closed.
        lifecycle.verified_false_alarm(
            session,
            alert=alert,
            at=at,
            detail="la personne a confirmé que tout va bien (touche 1) : aucun référent alerté",
        )
        log.warning("automatic alarm cancelled by the worker alert_id=%s", alert_id)

    def after_worker_ok(self, alert_id: str, at: datetime) -> None:
        try:
            with read_scope(self.engine) as session:
                alert = alerts.get_alert(session, alert_id=alert_id)
                refs = [AlertRef.of(a) for a in (alert,) if a is not None]
                refs += [
                    AlertRef.of(a) for a in alerts.incident_members(session, alert_id=alert_id)
                ]
            for ref in refs:
                self.downlink.alert(ref, DownlinkType.ALERT_CANCELLED)
        except Exception:
            log.exception("could not tell the device alert_id=%s", alert_id)
