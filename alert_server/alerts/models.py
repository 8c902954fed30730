"""The Alert aggregate: one row per alert_id, and its timeline events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from vigie.vocabulary import AlertState


class Alert(SQLModel, table=True):
    """One alert. Its identity is ``(device_id, device_alert_id)`` (protocol.md 1.1): a repeat
    is the same ``alert_id`` from the same device; another device reusing an ``alert_id`` makes
    a different alert. ``alert_id`` is the server's own key, the one every other table, the API
    and the links use: the device's id when it is free, else one derived from both."""

    __tablename__ = "alert"
    __table_args__ = (
        UniqueConstraint("device_id", "device_alert_id"),
        # Every press looks up its device's running incident (``incident_primary``): only the
        # incidents' first alerts, by device, kind and last press. Without it the lookup read
        # every alert the device ever sent, and a flood of presses got slower with each one.
        Index(
            "ix_alert_incident_head",
            "device_id",
            "kind",
            "last_press_at",
            sqlite_where=text("incident_of IS NULL"),
            postgresql_where=text("incident_of IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    alert_id: str = Field(max_length=64, unique=True)
    # Not a foreign key: an alert from an unknown device is kept, never dropped.
    device_id: str = Field(max_length=64, index=True)
    # The ``alert_id`` the device sent (what every downlink about this alert carries).
    device_alert_id: str = Field(max_length=64)
    # A flood collapses into one incident: a new alert of the same kind from the same device
    # while its previous one is still open (within the flood window) is stored, receipted, and
    # attached to that first alert (``incident_of``) instead of being escalated again.
    incident_of: str | None = Field(default=None, max_length=64, index=True)
    # On the first alert of an incident: how many presses it collects, and the last one.
    presses: int = 1
    last_press_at: datetime | None = None
    kind: str = Field(max_length=32)  # what is escalated: sos, sos_silent, fall, ...
    original_kind: str | None = Field(default=None, max_length=64)  # an unknown kind, kept
    state: str = Field(default=AlertState.OPEN, max_length=16, index=True)
    duress: bool = False
    flags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(index=True)  # when the message reached the server
    device_ts: datetime | None = None  # the device's own time, as sent
    batt: int | None = None
    pos_lat: float | None = None
    pos_lon: float | None = None
    pos_acc_m: float | None = None
    pos_at: datetime | None = None
    pos_src: str | None = Field(default=None, max_length=16)
    departement: str | None = Field(default=None, max_length=3, index=True)
    commune_code: str | None = Field(default=None, max_length=5)
    commune_nom: str | None = Field(default=None, max_length=100)
    force: str | None = Field(default=None, max_length=2)
    # Set once the escalation has been handed to dispatch; a sweep picks up any alert left
    # without it (server crash between the commit and the hand-off).
    dispatched_at: datetime | None = Field(default=None, index=True)
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = Field(default=None, max_length=200)
    resolved_at: datetime | None = None
    outcome: str | None = Field(default=None, max_length=64)
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The payload exactly as received (valid or not), for the record and the ONVS report.
    raw: str = Field(sa_column=Column(Text, nullable=False))


class AlertEvent(SQLModel, table=True):
    """One line of an alert's timeline: a message in or out, a state change, an action."""

    __tablename__ = "alert_event"

    id: int | None = Field(default=None, primary_key=True)
    alert_id: str = Field(max_length=64, index=True)
    at: datetime
    type: str = Field(max_length=40)  # vigie.vocabulary.AlertEventType
    actor: str | None = Field(default=None, max_length=200)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class AlertDepartement(SQLModel, table=True):
    """Every département an alert concerns: its own, the other side of an ambiguous border,
    and any it moved into. Dispatchers of each of them see the alert."""

    __tablename__ = "alert_departement"

    alert_id: str = Field(max_length=64, primary_key=True)
    departement: str = Field(max_length=3, primary_key=True, index=True)
    added_at: datetime
    reason: str = Field(max_length=20)  # position | ambiguous_border | moved
