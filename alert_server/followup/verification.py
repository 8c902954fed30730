"""The alert server's side of the verification of automatic alarms (``dispatch.verification``).

When the worker presses 1 ("I am fine") on the call to her own phone before the deadline,
dispatch stands the escalation down and calls ``on_worker_ok`` in the same transaction: the
alert is recorded as cancelled, outcome ``false_alarm``, by the worker, on its timeline. After
the commit the device receives ``alert.cancelled`` (its pre-alarm display can stop).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session

from alert_server.alerts import lifecycle
from alert_server.alerts import service as alerts
from alert_server.db import read_scope
from alert_server.ingest.downlink import AlertRef, Downlink
from vigie.vocabulary import DownlinkType

log = logging.getLogger(__name__)


class WorkerOkBridge:
    """Implements ``dispatch.verification.VerificationHooks``."""

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
