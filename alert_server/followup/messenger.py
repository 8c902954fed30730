"""The worker's own SMS: notice detection, then the outbox, at every tick.

Built with two ports (``notices.WatchedDevices``, ``notices.DevicesInVisit``) that the
composition root plugs into the devices and sessions stages."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session

from alert_server.db import read_scope, write_scope
from alert_server.followup import notices, victim_support
from alert_server.followup.models import LOW_BATTERY, OFFLINE, VICTIM_SUPPORT, WorkerMessage
from alert_server.followup.notices import (
    DevicesInVisit,
    NoticeConfig,
    NoticeReport,
    WatchedDevices,
)
from alert_server.followup.outbox import Outbox, OutboxReport
from alert_server.followup.victim_support import SupportDirectory
from dispatch.channels.base import Notifier
from vigie.timeutil import utcnow

log = logging.getLogger(__name__)


@dataclass
class MessengerReport:
    notices: NoticeReport
    outbox: OutboxReport


class WorkerMessenger:
    def __init__(
        self,
        engine: Engine,
        notifier: Notifier,
        *,
        devices: WatchedDevices,
        in_visit: DevicesInVisit,
        notices: NoticeConfig | None = None,
        support: SupportDirectory | None = None,
        victim_support_enabled: bool = True,
    ) -> None:
        self.engine = engine
        self.devices = devices
        self.in_visit = in_visit
        self.notice_config = notices or NoticeConfig()
        self.support = support or SupportDirectory()
        self.victim_support_enabled = victim_support_enabled
        self.outbox = Outbox(engine, notifier, self.compose)

    def compose(self, session: Session, message: WorkerMessage) -> str | None:
        """The text of a queued message, or None to skip it (disabled, opted out since)."""
        if message.kind in (LOW_BATTERY, OFFLINE):
            return notices.text(message) if self.notice_config.enabled else None
        if message.kind == VICTIM_SUPPORT:
            if not self.victim_support_enabled:
                return None
            if message.worker_id is not None and victim_support.opted_out(
                session, message.worker_id
            ):
                return None
            ctx = message.context
            return victim_support.text(
                self.support,
                departement=ctx.get("departement"),
                incident_at=datetime.fromisoformat(str(ctx["incident_at"])),
            )
        log.error("unknown worker message kind=%s id=%s", message.kind, message.id)
        return None

    def tick(self, now: datetime) -> MessengerReport:
        report = NoticeReport()
        if self.notice_config.enabled:
            # Looked at without the write lock (every device in service, every 5 s); the
            # devices whose episodes change, if any, are looked at again with it.
            with read_scope(self.engine) as session:
                changing = notices.changing(
                    session,
                    now=now,
                    config=self.notice_config,
                    in_visit=self.in_visit(session),
                    devices=self.devices(session),
                )
            if changing:
                with write_scope(self.engine) as session:
                    report = notices.detect(
                        session,
                        now=now,
                        config=self.notice_config,
                        in_visit=self.in_visit(session),
                        devices=self.devices(session),
                        only=changing,
                    )
        return MessengerReport(report, self.outbox.run_due(now))

    def tick_safe(self) -> None:
        try:
            self.tick(utcnow())
        except Exception:
            log.exception("worker messages tick failed; the next tick retries")
