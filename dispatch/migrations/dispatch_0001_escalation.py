"""Dispatch: escalations, chains, contacts, notifications, ack codes, inbound SMS, events.

Revision ID: dispatch_0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision: str = "dispatch_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("dispatch",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dispatch_escalation",
        sa.Column("alert_id", AutoString(length=64), nullable=False),
        sa.Column("status", AutoString(length=16), nullable=False),
        sa.Column("alert_created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("exhausts_at", UTCDateTime(), nullable=False),
        sa.Column("ack_code", AutoString(length=3), nullable=False),
        sa.Column("duress", sa.Boolean(), nullable=False),
        sa.Column("duress_at", UTCDateTime(), nullable=True),
        sa.Column("acked_at", UTCDateTime(), nullable=True),
        sa.Column("acked_by_name", AutoString(length=200), nullable=True),
        sa.Column("acked_by_phone", AutoString(length=20), nullable=True),
        sa.Column("acked_via", AutoString(length=16), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("end_reason", AutoString(length=200), nullable=True),
        sa.Column("exhausted_at", UTCDateTime(), nullable=True),
        sa.Column("brief", sa.Text(), nullable=False),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("alert_id", name=op.f("pk_dispatch_escalation")),
    )
    # Exhaustion check and the clock's next wake-up: active rows by exhaustion time.
    op.create_index("ix_dispatch_escalation_due", "dispatch_escalation", ["status", "exhausts_at"])

    op.create_table(
        "dispatch_chain",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", AutoString(length=64), nullable=False),
        sa.Column("chain_index", sa.Integer(), nullable=False),
        sa.Column("departement", AutoString(length=3), nullable=True),
        sa.Column("force", AutoString(length=2), nullable=True),
        sa.Column("starts_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch_chain")),
        sa.UniqueConstraint("alert_id", "chain_index", name=op.f("uq_dispatch_chain_alert_id")),
    )

    op.create_table(
        "dispatch_contact",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", AutoString(length=64), nullable=False),
        sa.Column("chain_index", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", AutoString(length=200), nullable=False),
        sa.Column("phone", AutoString(length=20), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch_contact")),
        sa.UniqueConstraint(
            "alert_id", "chain_index", "position", name=op.f("uq_dispatch_contact_alert_id")
        ),
    )

    op.create_table(
        "dispatch_notification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", AutoString(length=64), nullable=False),
        sa.Column("kind", AutoString(length=16), nullable=False),
        sa.Column("chain_index", sa.Integer(), nullable=False),
        sa.Column("step_no", sa.Integer(), nullable=False),
        sa.Column("round_no", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("contact_name", AutoString(length=200), nullable=False),
        sa.Column("phone", AutoString(length=20), nullable=False),
        sa.Column("channel", AutoString(length=8), nullable=False),
        sa.Column("status", AutoString(length=16), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("next_action_at", UTCDateTime(), nullable=False),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("claim_token", AutoString(length=36), nullable=True),
        sa.Column("claimed_by", AutoString(length=100), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("ack_code", AutoString(length=3), nullable=True),
        sa.Column("provider_sid", AutoString(length=64), nullable=True),
        sa.Column("provider_status", AutoString(length=20), nullable=True),
        sa.Column("provider_rank", sa.Integer(), nullable=False),
        sa.Column("error_code", AutoString(length=16), nullable=True),
        sa.Column("error_message", AutoString(length=500), nullable=True),
        sa.Column("digits", AutoString(length=8), nullable=True),
        sa.Column("segments", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch_notification")),
        sa.UniqueConstraint(
            "alert_id",
            "step_no",
            "contact_id",
            "channel",
            "round_no",
            name=op.f("uq_dispatch_notification_alert_id"),
        ),
        sa.UniqueConstraint("provider_sid", name=op.f("uq_dispatch_notification_provider_sid")),
    )
    op.create_index(
        op.f("ix_dispatch_notification_alert_id"), "dispatch_notification", ["alert_id"]
    )
    # The claim query: due rows by status and time.
    op.create_index(
        "ix_dispatch_notification_due", "dispatch_notification", ["status", "next_action_at"]
    )
    # Per-number rate limit: recent sends to one phone.
    op.create_index(
        "ix_dispatch_notification_phone_sent", "dispatch_notification", ["phone", "sent_at"]
    )

    op.create_table(
        "dispatch_ack_code",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", AutoString(length=64), nullable=False),
        sa.Column("phone", AutoString(length=20), nullable=False),
        sa.Column("code", AutoString(length=3), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("released_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch_ack_code")),
    )
    op.create_index(op.f("ix_dispatch_ack_code_alert_id"), "dispatch_ack_code", ["alert_id"])
    op.create_index(op.f("ix_dispatch_ack_code_phone"), "dispatch_ack_code", ["phone"])
    # A code is unique per number among the open alerts only (partial index).
    op.create_index(
        "uq_dispatch_ack_code_open",
        "dispatch_ack_code",
        ["phone", "code"],
        unique=True,
        sqlite_where=sa.text("released_at IS NULL"),
        postgresql_where=sa.text("released_at IS NULL"),
    )

    op.create_table(
        "dispatch_inbound",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider_sid", AutoString(length=64), nullable=True),
        sa.Column("from_phone", AutoString(length=20), nullable=False),
        sa.Column("to_phone", AutoString(length=20), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("alert_id", AutoString(length=64), nullable=True),
        sa.Column("outcome", AutoString(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch_inbound")),
        sa.UniqueConstraint("provider_sid", name=op.f("uq_dispatch_inbound_provider_sid")),
    )
    op.create_index(op.f("ix_dispatch_inbound_from_phone"), "dispatch_inbound", ["from_phone"])
    op.create_index(op.f("ix_dispatch_inbound_alert_id"), "dispatch_inbound", ["alert_id"])

    op.create_table(
        "dispatch_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", AutoString(length=64), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("kind", AutoString(length=32), nullable=False),
        sa.Column("notification_id", sa.Integer(), nullable=True),
        sa.Column("channel", AutoString(length=16), nullable=True),
        sa.Column("phone", AutoString(length=20), nullable=True),
        sa.Column("actor", AutoString(length=200), nullable=True),
        sa.Column("status", AutoString(length=20), nullable=True),
        sa.Column("detail", AutoString(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch_event")),
    )
    op.create_index(op.f("ix_dispatch_event_alert_id"), "dispatch_event", ["alert_id"])


def downgrade() -> None:
    op.drop_table("dispatch_event")
    op.drop_table("dispatch_inbound")
    op.drop_table("dispatch_ack_code")
    op.drop_table("dispatch_notification")
    op.drop_table("dispatch_contact")
    op.drop_table("dispatch_chain")
    op.drop_table("dispatch_escalation")
