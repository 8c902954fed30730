"""The alert server's side of dispatch's hooks (``dispatch.hooks.DispatchHooks``).

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
from alert_server.ingest.downlink import AlertRef, Downlink
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
