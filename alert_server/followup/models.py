"""Follow-up tables: messages to the worker (an outbox), notice episodes, worker preferences.

The migration is in ``alert_server/sessions/migrations/`` (one Alembic branch for the timed
visits and their follow-up).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text
from sqlmodel import Field, SQLModel

# Outbox statuses.
PLANNED = "planned"
SENDING = "sending"
SENT = "sent"
FAILED = "failed"
SKIPPED = "skipped"  # opted out or disabled when it came to be sent

# Message kinds.
LOW_BATTERY = "low_battery"
OFFLINE = "offline"
VICTIM_SUPPORT = "victim_support"


class WorkerMessage(SQLModel, table=True):
    """One SMS to a worker (never to a responder). Written before the provider is called.

    ``dedupe_key`` is unique: "once per episode" and "once per incident" hold even with two
    servers deciding at the same instant.
    """

    __tablename__ = "worker_message"
    __table_args__ = (Index("ix_worker_message_due", "status", "next_action_at"),)

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(max_length=120, unique=True)
    kind: str = Field(max_length=20)
    worker_id: int | None = Field(default=None, index=True)
    device_id: str | None = Field(default=None, max_length=64)
    alert_id: str | None = Field(default=None, max_length=64, index=True)
    phone: str = Field(max_length=20)
    # What the text is built from at send time (time of the incident, département…).
    context: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    body: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    status: str = Field(default=PLANNED, max_length=16)
    next_action_at: datetime
    lease_until: datetime | None = None
    claim_token: str | None = Field(default=None, max_length=36)
    attempts: int = 0
    provider_sid: str | None = Field(default=None, max_length=64)
    error: str | None = Field(default=None, max_length=300)
    created_at: datetime
    sent_at: datetime | None = None
    updated_at: datetime


class WorkerNotice(SQLModel, table=True):
    """The current episode of a device condition the worker is told about (low battery,
    offline outside a session). Deleted when the condition has been clear long enough, so that
    a flapping device makes one episode, not one SMS per flap."""

    __tablename__ = "worker_notice"

    device_id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(primary_key=True, max_length=20)
    detected_at: datetime
    notified_at: datetime | None = None
    clear_since: datetime | None = None


class WorkerPreference(SQLModel, table=True):
    """Per-worker choices (kept apart from ``worker`` so that follow-up owns them)."""

    __tablename__ = "worker_preference"

    worker_id: int = Field(primary_key=True)
    # The worker does not want the victim-support SMS after an incident.
    victim_support_opt_out: bool = False
    updated_at: datetime
