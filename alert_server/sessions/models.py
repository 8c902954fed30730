"""The timed visit (``visit_session``): one row per device session, its timer and its state."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

# States. ``active`` and ``warned`` have a running timer; ``alerted`` and ``ended`` have none.
ACTIVE = "active"  # timer: the expected end (or a time still to compute: due_at NULL)
WARNED = "warned"  # session.warning sent; timer: the end of the grace time
ALERTED = "alerted"  # a server-side alert was raised; the alert now carries the story
ENDED = "ended"
RUNNING = (ACTIVE, WARNED)
OPEN = (ACTIVE, WARNED, ALERTED)


class VisitSession(SQLModel, table=True):
    """A timed visit. The device chooses ``session_id``; the server owns the timers."""

    __tablename__ = "visit_session"
    __table_args__ = (
        # A device can only speak of its own sessions: the key includes the device.
        UniqueConstraint("device_id", "session_id", name="uq_visit_session_device_id"),
        # The timer sweep: running rows by due time.
        Index("ix_visit_session_due", "state", "due_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(max_length=64, index=True)
    session_id: str = Field(max_length=64)
    state: str = Field(default=ACTIVE, max_length=16)
    # The visit's description, often the patient's address: shown to the responders, purged
    # with the positions once the session is over (retention).
    memo: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    started_at: datetime  # server time of the start message
    # The end announced by the device (server clock; a device clock ahead is corrected).
    expected_end: datetime | None = None
    # When the timer fires next; NULL = to be computed by the engine (its settings decide).
    due_at: datetime | None = None
    last_checkin_at: datetime | None = None
    warned_at: datetime | None = None
    # The device's status seen "offline" during the session: an alert at offline_due_at.
    offline_since: datetime | None = None
    offline_due_at: datetime | None = None
    alert_id: str | None = Field(default=None, max_length=64, index=True)
    alert_reason: str | None = Field(default=None, max_length=16)  # overdue | offline
    ended_at: datetime | None = None
    end_reason: str | None = Field(default=None, max_length=32)  # end | superseded
    pos_lat: float | None = None
    pos_lon: float | None = None
    pos_acc_m: float | None = None
    pos_at: datetime | None = None
    pos_src: str | None = Field(default=None, max_length=16)
    updated_at: datetime
