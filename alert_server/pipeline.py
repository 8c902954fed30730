"""The use case written out: on_alert → geolocate → match → dispatch.

Stages do not import one another; this module is where they meet. Slow work (geolocation
providers, telephony) runs on a small thread pool, never in the MQTT thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Engine
from sqlmodel import Session

from alert_server.alerts import service as alerts
from alert_server.alerts.models import Alert
from alert_server.db import session_scope
from alert_server.devices import service as devices
from alert_server.devices.presence import LastPosition, PresenceTracker
from alert_server.ingest import payloads, topics
from alert_server.timeutil import utcnow

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], None]
# An alert stored but not handed to dispatch after this long is picked up by the sweep.
SWEEP_GRACE = timedelta(seconds=5)


class AlertStage(Protocol):
    """One step of the flow after storage (geolocation + matching + dispatch)."""

    def process(self, session: Session, alert: Alert, now: datetime) -> list[Callable[[], None]]:
        """Work on a stored alert inside the session; returns actions to run after commit."""
        ...

    def stand_down(self, session: Session, alert: Alert, now: datetime) -> None: ...

    def duress(self, session: Session, alert: Alert, now: datetime) -> None: ...

    def acknowledged(
        self, session: Session, alert: Alert, actor: str, via: str, now: datetime
    ) -> None: ...

    def close(self, session: Session, alert: Alert, now: datetime) -> None: ...


class Pipeline:
    def __init__(
        self,
        engine: Engine,
        *,
        presence: PresenceTracker,
        publish: Publish,
        stages: list[AlertStage] | None = None,
        workers: int = 4,
    ) -> None:
        self.engine = engine
        self.presence = presence
        self.publish = publish
        self.stages = stages or []
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vigie-pipeline")
        self._inflight: set[str] = set()
        self._lock = threading.Lock()

    # -- after storage -------------------------------------------------------------------
    def alert_stored(self, alert_id: str) -> None:
        with self._lock:
            if alert_id in self._inflight:
                return
            self._inflight.add(alert_id)
        self._pool.submit(self._process_safe, alert_id)

    def _process_safe(self, alert_id: str) -> None:
        try:
            self.process(alert_id, utcnow())
        except Exception:
            # The alert stays undispatched; the sweep retries it.
            log.exception("pipeline failed alert_id=%s; the sweep will retry", alert_id)
        finally:
            with self._lock:
                self._inflight.discard(alert_id)

    def process(self, alert_id: str, now: datetime) -> None:
        if not self.stages:
            return
        after: list[Callable[[], None]] = []
        with session_scope(self.engine) as session:
            alert = alerts.get_alert(session, alert_id=alert_id)
            if alert is None or alert.dispatched_at is not None or alert.state != "open":
                return
            for stage in self.stages:
                after.extend(stage.process(session, alert, now))
            alert.dispatched_at = now
            session.add(alert)
        for action in after:
            action()

    def sweep(self, now: datetime | None = None) -> int:
        """Hand over every stored alert that has not reached dispatch (crash recovery)."""
        if not self.stages:
            return 0
        now = now or utcnow()
        with session_scope(self.engine) as session:
            pending = alerts.undispatched(session, older_than=now - SWEEP_GRACE)
        for alert_id in pending:
            log.warning("alert_id=%s was stored but never dispatched; dispatching now", alert_id)
            self.alert_stored(alert_id)
        return len(pending)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)

    # -- responders ------------------------------------------------------------------------
    def acknowledge(self, alert_id: str, *, actor: str, via: str, now: datetime) -> bool:
        """Take the alert in charge. True for the first acknowledgement, False otherwise.

        Atomic: a conditional UPDATE on the open alert, so an SMS reply, a key press and a
        dashboard click arriving at the same instant make exactly one acknowledgement.
        """
        with session_scope(self.engine) as session:
            won = alerts.mark_acknowledged(
                session, alert_id=alert_id, actor=actor, via=via, now=now
            )
            alert = alerts.get_alert(session, alert_id=alert_id) if won else None
            if alert is not None:
                for stage in self.stages:
                    stage.acknowledged(session, alert, actor, via, now)
        if alert is not None:
            self._reply(alert.device_id, "alert.acknowledged", alert_id)()
        return won

    def resolve(
        self, alert_id: str, *, actor: str, outcome: str, note: str | None, now: datetime
    ) -> bool:
        """Close the alert (any state but resolved). True when this call closed it."""
        with session_scope(self.engine) as session:
            alert = alerts.get_alert(session, alert_id=alert_id)
            if alert is None or alert.state == "resolved":
                return False
            alert.state = "resolved"
            alert.resolved_at = now
            alert.outcome = outcome
            alert.note = note
            session.add(alert)
            alerts.add_event(
                session, alert_id=alert_id, at=now, type_="resolved", actor=actor, outcome=outcome
            )
            for stage in self.stages:
                stage.close(session, alert, now)
            device_id = alert.device_id
        self._reply(device_id, "alert.resolved", alert_id)()
        return True

    # -- device messages (ingest writer thread, inside its transaction) ---------------------
    def on_cancel(
        self, session: Session, *, device_id: str, msg: payloads.CancelMsg, now: datetime
    ) -> list[Callable[[], None]]:
        alert = alerts.get_alert(session, alert_id=msg.alert_id)
        if alert is None or alert.device_id != device_id:
            # A device may only cancel its own alerts.
            log.warning(
                "cancel for unknown alert alert_id=%s device_id=%s", msg.alert_id, device_id
            )
            return []
        found = devices.device_and_worker(session, device_id)
        if found is None:
            alerts.add_event(
                session, alert_id=alert.alert_id, at=now, type_="pin_unverifiable", actor=device_id
            )
            return []
        _, worker = found
        reply = self._reply(device_id, "alert.cancelled", alert.alert_id)
        if devices.pin_matches(msg.pin, worker.duress_pin_hash):
            # The duress PIN must look exactly like a cancel to whoever holds the device,
            # while the escalation goes on and every contact is told.
            if not alert.duress:
                alert.duress = True
                alert.flags = sorted({*alert.flags, "duress"})
                session.add(alert)
                alerts.add_event(
                    session, alert_id=alert.alert_id, at=now, type_="duress", actor=device_id
                )
                log.warning("DURESS alert_id=%s device_id=%s", alert.alert_id, device_id)
                for stage in self.stages:
                    stage.duress(session, alert, now)
            return [reply]
        if devices.pin_matches(msg.pin, worker.pin_hash):
            if alert.duress:
                # Once under duress, a later "cancel" cannot stand the alert down: it may be
                # typed under the same threat.
                alerts.add_event(
                    session,
                    alert_id=alert.alert_id,
                    at=now,
                    type_="cancel_after_duress",
                    actor=device_id,
                )
                return [reply]
            if alert.state in ("open", "acknowledged"):
                alert.state = "cancelled"
                alert.resolved_at = now
                session.add(alert)
                alerts.add_event(
                    session, alert_id=alert.alert_id, at=now, type_="cancelled", actor=device_id
                )
                log.info("alert cancelled alert_id=%s device_id=%s", alert.alert_id, device_id)
                for stage in self.stages:
                    stage.stand_down(session, alert, now)
            return [reply]
        alerts.add_event(
            session, alert_id=alert.alert_id, at=now, type_="pin_wrong", actor=device_id
        )
        log.warning("wrong cancel PIN alert_id=%s device_id=%s", alert.alert_id, device_id)
        return []

    def on_session(
        self, session: Session, *, device_id: str, msg: payloads.SessionMsg, now: datetime
    ) -> list[Callable[[], None]]:
        # Timed visits are their own capability; until they are handled the message is
        # logged (its position already went to the presence tracker).
        log.info(
            "session message device_id=%s session_id=%s action=%s",
            device_id,
            msg.session_id,
            msg.action,
        )
        return []

    def on_position(self, device_id: str, position: LastPosition) -> None:
        return None

    def _reply(
        self, device_id: str, type_: payloads.CommandType, alert_id: str
    ) -> Callable[[], None]:
        def send() -> None:
            self.publish(
                topics.cmd(device_id), payloads.command(type_, utcnow(), alert_id=alert_id)
            )

        return send
