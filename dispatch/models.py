"""Dispatch tables (prefix ``dispatch_``). Timers are rows: nothing lives only in memory.

No foreign key points at an ``alert_server`` table: ``alert_id`` is a plain string, so dispatch
can be migrated, tested and run on its own. The hand-written migration in
``dispatch/migrations/`` must match these models exactly (``tests/dispatch/test_models.py``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

# Escalation statuses. ``active`` and ``exhausted`` are "open": an exhausted escalation has run
# out of steps but can (and must) still be acknowledged.
ACTIVE = "active"
EXHAUSTED = "exhausted"
ACKNOWLEDGED = "acknowledged"
STOOD_DOWN = "stood_down"
CLOSED = "closed"
OPEN_STATUSES = (ACTIVE, EXHAUSTED)

# Notification lifecycle (our side). Provider statuses are kept apart in ``provider_status``.
PLANNED = "planned"  # waiting for next_action_at (first try or a retry)
CLAIMED = "claimed"  # leased by one engine, provider not called yet: safe to cancel or take over
SENDING = "sending"  # the provider call is (or may be) in flight
SENT = "sent"  # the provider accepted it and gave a SID
FAILED = "failed"  # permanent failure, or retries exhausted, or a failure status callback
CANCELLED = "cancelled"  # never sent: the escalation stopped first

# Notification kinds. The alert kind runs the escalation; the others tell people what happened.
KIND_ALERT = "alert"
KIND_ACK_INFO = "ack_info"
KIND_STAND_DOWN = "stand_down"
KIND_DURESS = "duress"
# The call to the worker's own phone that verifies an automatic alarm (fall, no_motion) before
# the chain is notified (dispatch/verification.py). Never an acknowledgement.
KIND_VERIFY = "verify"
# Informational messages have no policy step: they use these negative step numbers, so the
# unique key (alert, step, contact, channel, round) makes each of them idempotent too.
INFO_STEP = {KIND_ACK_INFO: -1, KIND_STAND_DOWN: -2, KIND_DURESS: -3, KIND_VERIFY: -4}

# Priority classes of notification rows (lower first). The engine claims rows by (priority,
# due time) and keeps send workers for the urgent class alone, so a life-safety message never
# queues behind a "taken by" SMS, a stand-down or a reminder; only the lower classes are ever
# throttled (GoAlert #2778: a throttle must never hold back a life-safety page).
PRIORITY_URGENT = 0  # first pass of an alert's chain, duress notices, verification calls
PRIORITY_REPEAT = 1  # repeat passes of the chain (reminders)
PRIORITY_INFO = 2  # "taken by" and stand-down SMS


def priority_of(kind: str, round_no: int) -> int:
    """The class of a notification, from what it is (the one rule, used when rows are written
    and when the engine decides whether a row may be throttled)."""
    if kind in (KIND_DURESS, KIND_VERIFY):
        return PRIORITY_URGENT
    if kind == KIND_ALERT:
        return PRIORITY_URGENT if round_no == 0 else PRIORITY_REPEAT
    if kind in (KIND_ACK_INFO, KIND_STAND_DOWN):
        return PRIORITY_INFO
    return PRIORITY_URGENT  # an unknown kind is never held back


# Acknowledgement codes: 3 digits while one is free for the number, then longer ones (see
# ``codes.reserve_codes``); never more than this many digits.
ACK_CODE_MIN_DIGITS = 3
ACK_CODE_MAX_DIGITS = 6

# Verification statuses (dispatch_verification.status).
VERIFY_PENDING = "pending"  # the worker is being called; the chain is held until the deadline
VERIFY_CONFIRMED = "confirmed"  # the worker pressed 1 in time: stood down as a false alarm
VERIFY_ESCALATED = "escalated"  # anything else: the chain was released (see ``reason``)


class Escalation(SQLModel, table=True):
    """One escalation per alert (the primary key makes ``start`` idempotent)."""

    __tablename__ = "dispatch_escalation"
    __table_args__ = (
        # Exhaustion check and the clock's next wake-up: active rows by exhaustion time.
        Index("ix_dispatch_escalation_due", "status", "exhausts_at"),
    )

    alert_id: str = Field(primary_key=True, max_length=64)
    status: str = Field(default=ACTIVE, max_length=16)
    alert_created_at: datetime  # `after_s` counts from here
    started_at: datetime
    # When the last pass of the policy is over; used to declare the escalation exhausted.
    exhausts_at: datetime
    # The code of the first contact ("" when none could be reserved: the SMS then say to use
    # the link or the call). Each number's own code is on its notification rows.
    ack_code: str = Field(max_length=8)
    duress: bool = False
    duress_at: datetime | None = None
    acked_at: datetime | None = None
    acked_by_name: str | None = Field(default=None, max_length=200)
    acked_by_phone: str | None = Field(default=None, max_length=20)
    acked_via: str | None = Field(default=None, max_length=16)
    ended_at: datetime | None = None
    end_reason: str | None = Field(default=None, max_length=200)
    exhausted_at: datetime | None = None
    # The AlertBrief and the policy as JSON: any server can build the messages after a restart.
    brief: str = Field(sa_column=Column(Text, nullable=False))
    policy: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: datetime


class ChainRow(SQLModel, table=True):
    """One referent chain worked for an alert (several on an ambiguous border)."""

    __tablename__ = "dispatch_chain"
    __table_args__ = (
        UniqueConstraint("alert_id", "chain_index", name="uq_dispatch_chain_alert_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    alert_id: str = Field(max_length=64)
    chain_index: int
    departement: str | None = Field(default=None, max_length=3)
    force: str | None = Field(default=None, max_length=2)
    # The policy's after_s counts from here for this chain (the alert's creation for the chains
    # given at start, the time it was added for a chain added later).
    starts_at: datetime


class ContactRow(SQLModel, table=True):
    """A contact of a chain, snapshotted at start: a shift change never drops a referent."""

    __tablename__ = "dispatch_contact"
    __table_args__ = (
        UniqueConstraint(
            "alert_id", "chain_index", "position", name="uq_dispatch_contact_alert_id"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    alert_id: str = Field(max_length=64)
    chain_index: int
    position: int  # 1-based, as in the policy
    name: str = Field(max_length=200)
    phone: str = Field(max_length=20)


class Notification(SQLModel, table=True):
    """One SMS or call to one contact. Planned at start, written before the provider is called."""

    __tablename__ = "dispatch_notification"
    __table_args__ = (
        UniqueConstraint(
            "alert_id",
            "step_no",
            "contact_id",
            "channel",
            "round_no",
            name="uq_dispatch_notification_alert_id",
        ),
        Index("ix_dispatch_notification_due", "status", "next_action_at"),
        # The claim query: due rows by class, then time.
        Index("ix_dispatch_notification_claim", "status", "priority", "next_action_at"),
        Index("ix_dispatch_notification_phone_sent", "phone", "sent_at"),
        # The next free slot of a number (throttled rows wait in line behind each other).
        Index("ix_dispatch_notification_phone_next", "phone", "status", "next_action_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    alert_id: str = Field(max_length=64, index=True)
    kind: str = Field(max_length=16)
    chain_index: int
    step_no: int
    round_no: int
    contact_id: int
    contact_name: str = Field(max_length=200)
    phone: str = Field(max_length=20)
    channel: str = Field(max_length=8)  # sms, voice
    status: str = Field(default=PLANNED, max_length=16)
    due_at: datetime  # as planned by the policy (for lateness and the timeline)
    next_action_at: datetime  # when the engine should act (pulled forward, or a retry)
    lease_until: datetime | None = None
    claim_token: str | None = Field(default=None, max_length=36)
    claimed_by: str | None = Field(default=None, max_length=100)
    attempts: int = 0
    ack_code: str | None = Field(default=None, max_length=8)
    # PRIORITY_URGENT / PRIORITY_REPEAT / PRIORITY_INFO (``priority_of``); urgent by default.
    priority: int = PRIORITY_URGENT
    provider_sid: str | None = Field(default=None, max_length=64, unique=True)
    provider_status: str | None = Field(default=None, max_length=20)
    provider_rank: int = 0  # status never goes backwards: only a higher rank replaces it
    error_code: str | None = Field(default=None, max_length=16)
    error_message: str | None = Field(default=None, max_length=500)
    digits: str | None = Field(default=None, max_length=8)  # key pressed on a call
    segments: int | None = None
    created_at: datetime
    sent_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime
    # When the provider was last called for this row (set with status ``sending``, before the
    # call): after a crash, what the provider accepted since then is looked up before resending.
    sending_at: datetime | None = None
    # SHA-256 of the SMS text handed to the provider (the text shows the position's age, so it
    # cannot be rebuilt later): what the reconciliation matches the provider's list against.
    body_sha256: str | None = Field(default=None, max_length=64)


class AckCode(SQLModel, table=True):
    """The code a phone number replies with. Unique per number among open reservations.

    A reservation is released when the escalation ends for any reason (acknowledged, stood
    down, closed, exhausted); released codes stay for the record and for late replies, and are
    not given again to that number while they may still be answered (``codes``).
    """

    __tablename__ = "dispatch_ack_code"
    __table_args__ = (
        # Is this code taken for this number? (a few candidates checked at once)
        Index("ix_dispatch_ack_code_phone_code", "phone", "code"),
        # Partial unique index: the guard against two servers giving one code twice.
        Index(
            "uq_dispatch_ack_code_open",
            "phone",
            "code",
            unique=True,
            sqlite_where=text("released_at IS NULL"),
            postgresql_where=text("released_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    alert_id: str = Field(max_length=64, index=True)
    phone: str = Field(max_length=20, index=True)  # inbound replies, code choice
    code: str = Field(max_length=8)  # ACK_CODE_MIN_DIGITS to ACK_CODE_MAX_DIGITS digits
    created_at: datetime
    released_at: datetime | None = None


class Inbound(SQLModel, table=True):
    """Every inbound SMS, matched or not (replies from other numbers are recorded)."""

    __tablename__ = "dispatch_inbound"
    __table_args__ = (
        # Wrong codes from one number within the last minutes (the SMS acknowledgement lock).
        Index("ix_dispatch_inbound_from_phone_received", "from_phone", "received_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    provider_sid: str | None = Field(default=None, max_length=64, unique=True)
    from_phone: str = Field(max_length=20, index=True)
    to_phone: str | None = Field(default=None, max_length=20)
    body: str = Field(sa_column=Column(Text, nullable=False))
    received_at: datetime
    alert_id: str | None = Field(default=None, max_length=64, index=True)
    outcome: str = Field(max_length=32)


class Event(SQLModel, table=True):
    """Audit trail of an escalation: state changes, callbacks, acknowledgements."""

    __tablename__ = "dispatch_event"

    id: int | None = Field(default=None, primary_key=True)
    alert_id: str = Field(max_length=64, index=True)
    at: datetime
    kind: str = Field(max_length=32)
    notification_id: int | None = None
    channel: str | None = Field(default=None, max_length=16)  # sms, voice, or the ack's "via"
    phone: str | None = Field(default=None, max_length=20)
    actor: str | None = Field(default=None, max_length=200)
    status: str | None = Field(default=None, max_length=20)
    detail: str | None = Field(default=None, max_length=500)


class Verification(SQLModel, table=True):
    """The verification of one automatic alarm: the worker's own phone is called first.

    The escalation itself is started (and planned) at the same time, its notifications held
    until ``deadline_at``: whatever happens to the verification call, the chain fires then.
    """

    __tablename__ = "dispatch_verification"

    alert_id: str = Field(primary_key=True, max_length=64)
    phone: str = Field(max_length=20)  # the worker's own number (scrubbed by the retention job)
    status: str = Field(default=VERIFY_PENDING, max_length=16)
    # timeout, call_failed, busy, no-answer, completed, worker_help, duress, …
    reason: str | None = Field(default=None, max_length=32)
    started_at: datetime
    deadline_at: datetime  # when the held chain fires if nothing else happened first
    hold_s: float  # how far the chain's notifications were pushed back
    ended_at: datetime | None = None
    digits: str | None = Field(default=None, max_length=8)
