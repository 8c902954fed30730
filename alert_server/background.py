"""What the timed visits and the follow-up run in the server: built from the settings, their
jobs added to the server's scheduler (``Runtime``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import Engine

from alert_server.alerts import lifecycle
from alert_server.devices import service as devices
from alert_server.downlink import Downlink
from alert_server.followup.messenger import WorkerMessenger
from alert_server.followup.notices import NoticeConfig
from alert_server.followup.victim_support import load_directory
from alert_server.retention import RetentionPolicy, purge
from alert_server.sessions import service as visits
from alert_server.sessions.engine import AlertStored, SessionConfig, SessionEngine
from alert_server.settings import Settings
from dispatch.channels.base import Notifier
from vigie.timeutil import utcnow

log = logging.getLogger(__name__)

# Its jobs' ids on the server's scheduler.
SESSIONS_TICK = "sessions-tick"
WORKER_MESSAGES = "worker-messages"
RETENTION_PURGE = "retention-purge"
BACKGROUND_JOBS = (SESSIONS_TICK, WORKER_MESSAGES, RETENTION_PURGE)

HOUSEKEEPING_EVERY = timedelta(days=1)
# The first purge runs a little after start (not during it), then daily.
HOUSEKEEPING_FIRST = timedelta(minutes=10)


@dataclass
class Background:
    engine: Engine
    sessions: SessionEngine
    messenger: WorkerMessenger
    retention: RetentionPolicy
    tick_s: float

    @classmethod
    def build(
        cls,
        settings: Settings,
        engine: Engine,
        *,
        downlink: Downlink,
        alert_stored: AlertStored,
        notifier: Notifier,
    ) -> Background:
        s = settings
        sessions = SessionEngine(
            engine,
            downlink=downlink,
            alert_stored=alert_stored,
            receive_alert=lifecycle.receive,
            device_states=devices.states,
            config=SessionConfig(
                grace_s=dict(s.session_grace_s),
                offline_alert_s=s.session_offline_alert_s,
                checkin_extend_s=s.session_checkin_extend_s,
                default_duration_s=s.session_default_duration_s,
            ),
        )
        messenger = WorkerMessenger(
            engine,
            notifier,
            devices=devices.in_service,
            in_visit=visits.devices_in_visit,
            notices=NoticeConfig(
                enabled=s.notices_enabled,
                low_battery_pct=s.notice_low_battery_pct,
                offline_after_s=s.notice_offline_after_s,
                rearm_s=s.notice_rearm_s,
            ),
            # A broken file stops the start with its error named (like the referents file).
            support=load_directory(s.victim_support_file),
            victim_support_enabled=s.victim_support_enabled,
        )
        retention = RetentionPolicy(
            position_days=s.retention_position_days,
            alert_months=s.retention_alert_months,
            audit_months=s.retention_audit_months,
        )
        return cls(engine, sessions, messenger, retention, s.session_tick_s)

    def schedule(self, scheduler: BaseScheduler, *, executor: str) -> None:
        """Add the jobs (``BACKGROUND_JOBS``, one running at a time each) on ``executor``."""
        common = {
            "max_instances": 1,
            "coalesce": True,
            "misfire_grace_time": None,
            "executor": executor,
        }
        scheduler.add_job(
            self.sessions.tick_safe, "interval", seconds=self.tick_s, id=SESSIONS_TICK, **common
        )
        scheduler.add_job(
            self.messenger.tick_safe,
            "interval",
            seconds=self.tick_s,
            id=WORKER_MESSAGES,
            **common,
        )
        scheduler.add_job(
            self.housekeeping,
            "interval",
            seconds=HOUSEKEEPING_EVERY.total_seconds(),
            next_run_time=utcnow() + HOUSEKEEPING_FIRST,
            id=RETENTION_PURGE,
            **common,
        )

    def housekeeping(self) -> None:
        """The daily retention purge (several servers may run it: it is idempotent)."""
        try:
            purge(self.engine, now=utcnow(), policy=self.retention)
        except Exception:
            log.exception("retention purge failed; it runs again tomorrow")
