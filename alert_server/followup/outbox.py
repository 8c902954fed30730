"""SMS to the worker herself (notices, victim support): an outbox of rows, like dispatch.

A message is a row with a unique ``dedupe_key`` (once per episode, once per incident, even with
two servers deciding at the same instant). ``run_due(now)`` claims due rows with one
conditional UPDATE (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), builds the text at send time,
and calls the same ``Notifier`` as the escalation. These messages never go to a responder:
the number is always the worker's own.

At-least-once, as dispatch: a server dying after the provider accepted the SMS and before the
SID is stored resends it when the lease expires.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, or_
from sqlmodel import Session

from alert_server.db import read_scope, write_scope
from alert_server.followup.models import (
    FAILED,
    PLANNED,
    SENDING,
    SENT,
    SKIPPED,
    WorkerMessage,
)
from dispatch.channels.base import Notifier, PermanentSendError
from vigie.persistence import any_row, claim_due, insert_ignore, release_claim

log = logging.getLogger(__name__)

MSG = WorkerMessage.__table__  # type: ignore[attr-defined]

# Builds the text of a row at send time; None means "do not send" (opted out, disabled).
Compose = Callable[[Session, WorkerMessage], str | None]


def queue(
    session: Session,
    *,
    dedupe_key: str,
    kind: str,
    phone: str,
    now: datetime,
    worker_id: int | None = None,
    device_id: str | None = None,
    alert_id: str | None = None,
    context: dict[str, Any] | None = None,
) -> bool:
    """Queue one SMS to a worker unless ``dedupe_key`` was already queued. True if new."""
    values = {
        "dedupe_key": dedupe_key[:120],
        "kind": kind,
        "worker_id": worker_id,
        "device_id": device_id,
        "alert_id": alert_id,
        "phone": phone[:20],
        "context": context or {},
        "status": PLANNED,
        "next_action_at": now,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }
    return insert_ignore(session, WorkerMessage, values, keys=["dedupe_key"]) == 1


@dataclass
class OutboxReport:
    claimed: int = 0
    sent: int = 0
    skipped: int = 0
    retried: int = 0
    failed: int = 0


class Outbox:
    def __init__(
        self,
        engine: Engine,
        notifier: Notifier,
        compose: Compose,
        *,
        lease_s: float = 60.0,
        retry_backoff_s: tuple[float, ...] = (10.0, 30.0, 120.0, 600.0),
        batch_size: int = 50,
    ) -> None:
        self.engine = engine
        self.notifier = notifier
        self.compose = compose
        self.lease_s = lease_s
        self.retry_backoff_s = retry_backoff_s
        self.batch_size = batch_size

    def run_due(self, now: datetime) -> OutboxReport:
        report = OutboxReport()
        for row_id, token in self._claim(now):
            report.claimed += 1
            outcome = self._send(row_id, token, now)
            setattr(report, outcome, getattr(report, outcome) + 1)
        return report

    def _claim(self, now: datetime) -> list[tuple[int, str]]:
        token = uuid.uuid4().hex
        due = or_(
            and_(MSG.c.status == PLANNED, MSG.c.next_action_at <= now),
            and_(MSG.c.status == SENDING, MSG.c.lease_until < now),  # a server died mid-send
        )
        with read_scope(self.engine) as session:
            # Most ticks find nothing due: they look without the write lock, which on SQLite
            # every alert's commit waits for.
            if not any_row(session, MSG.c.id, due):
                return []
        with write_scope(self.engine) as session:
            rows = claim_due(
                session,
                MSG,
                due=due,
                order_by=[MSG.c.next_action_at],
                limit=self.batch_size,
                claim={
                    "status": SENDING,
                    "claim_token": token,
                    "lease_until": now + timedelta(seconds=self.lease_s),
                    "updated_at": now,
                },
            )
        return sorted((r[0], token) for r in rows)

    def _cas(self, session: Session, row_id: int, token: str, **values: Any) -> bool:
        return release_claim(
            session, MSG, row_id=row_id, token=token, values=values, where=[MSG.c.status == SENDING]
        )

    def _send(self, row_id: int, token: str, now: datetime) -> str:
        with write_scope(self.engine) as session:
            row = session.get(WorkerMessage, row_id)
            if row is None or row.claim_token != token:
                return "skipped"
            try:
                body = self.compose(session, row)
            except Exception:
                log.exception("worker message id=%s could not be composed", row_id)
                body = None
            if body is None:
                self._cas(session, row_id, token, status=SKIPPED, lease_until=None, updated_at=now)
                return "skipped"
            self._cas(session, row_id, token, body=body, updated_at=now)
            phone, kind, alert_id = row.phone, row.kind, row.alert_id
            attempts = row.attempts
        try:
            result = self.notifier.send_sms(
                to=phone, body=body, notification_id=0, alert_id=alert_id or f"worker-{kind}"
            )
        except Exception as exc:
            permanent = isinstance(exc, PermanentSendError)
            attempt = attempts + 1
            with write_scope(self.engine) as session:
                if not permanent and attempt <= len(self.retry_backoff_s):
                    self._cas(
                        session,
                        row_id,
                        token,
                        status=PLANNED,
                        attempts=attempt,
                        next_action_at=now + timedelta(seconds=self.retry_backoff_s[attempt - 1]),
                        claim_token=None,
                        lease_until=None,
                        error=str(exc)[:300],
                        updated_at=now,
                    )
                    outcome = "retried"
                else:
                    self._cas(
                        session,
                        row_id,
                        token,
                        status=FAILED,
                        attempts=attempt,
                        lease_until=None,
                        error=str(exc)[:300],
                        updated_at=now,
                    )
                    outcome = "failed"
            log.warning("worker SMS %s %s id=%s: %s", kind, outcome, row_id, exc)
            return outcome
        with write_scope(self.engine) as session:
            self._cas(
                session,
                row_id,
                token,
                status=SENT,
                provider_sid=result.sid[:64],
                sent_at=now,
                lease_until=None,
                updated_at=now,
            )
        log.info("worker SMS %s sent id=%s sid=%s", kind, row_id, result.sid)
        return "sent"
