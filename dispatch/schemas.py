"""What crosses the boundary between the alert server and dispatch.

``dispatch`` never imports ``alert_server``: the alert server hands it these plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Contact:
    """One reachable person or desk of a referent chain."""

    name: str
    phone: str  # E.164, e.g. "+33491000013"


@dataclass(frozen=True, slots=True)
class Chain:
    """The ordered contacts for one département and force, national fallback included last."""

    departement: str | None  # "13", "2A", "971"; None for the national fallback only
    force: str | None  # "PN", "GN" or None
    contacts: tuple[Contact, ...]


@dataclass(frozen=True, slots=True)
class AlertBrief:
    """Everything a message about an alert may say. Built by the alert server's pipeline."""

    alert_id: str
    device_id: str
    kind: str  # sos, sos_silent, fall, no_motion, session_overdue, or an unknown kind
    created_at: datetime  # aware UTC; escalation `after_s` counts from here
    worker_first_name: str | None = None
    worker_role: str | None = None  # nurse, pharmacist, other
    worker_phone: str | None = None  # call-back number, E.164
    commune: str | None = None
    departement: str | None = None
    place_label: str | None = None  # registered site label or session memo
    lat: float | None = None
    lon: float | None = None
    acc_m: float | None = None
    position_at: datetime | None = None  # when the position was measured (for its age)
    position_source: str | None = None  # gps, wifi, cell, fixed, manual, site, last_known
    flags: tuple[str, ...] = field(default_factory=tuple)
    duress: bool = False


# --- Results that dispatch hands back (added with the engine) ------------------------------


@dataclass(frozen=True, slots=True)
class AckResult:
    """Outcome of an acknowledgement attempt. Only the first one is ``accepted``."""

    alert_id: str
    accepted: bool
    status: str  # the escalation's status after the attempt ("unknown" if there is none)
    by_name: str | None = None  # who holds the alert (the winner, also when refused)
    by_phone: str | None = None
    via: str | None = None
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One line of an alert's dispatch timeline, for the dashboard."""

    at: datetime
    what: str  # alert_sms, alert_call, ack_info, stand_down, duress, acknowledged, inbound_sms…
    to_name: str | None = None
    to_phone: str | None = None
    channel: str | None = None
    status: str | None = None
    provider_sid: str | None = None
    error: str | None = None
    detail: str | None = None
    notification_id: int | None = None


@dataclass(frozen=True, slots=True)
class EscalationView:
    """The escalation's state, for the dashboard and the API."""

    alert_id: str
    status: str  # active, exhausted, acknowledged, stood_down, closed
    ack_code: str
    duress: bool
    started_at: datetime
    acked_at: datetime | None
    acked_by_name: str | None
    acked_by_phone: str | None
    acked_via: str | None
    exhausted_at: datetime | None
    next_action_at: datetime | None
