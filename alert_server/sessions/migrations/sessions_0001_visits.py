"""Sessions: timed visits, and their follow-up (worker messages, notice episodes, preferences).

Revision ID: sessions_0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision: str = "sessions_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("sessions",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "visit_session",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", AutoString(length=64), nullable=False),
        sa.Column("session_id", AutoString(length=64), nullable=False),
        sa.Column("state", AutoString(length=16), nullable=False),
        sa.Column("memo", sa.Text(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("expected_end", UTCDateTime(), nullable=True),
        sa.Column("due_at", UTCDateTime(), nullable=True),
        sa.Column("last_checkin_at", UTCDateTime(), nullable=True),
        sa.Column("warned_at", UTCDateTime(), nullable=True),
        sa.Column("offline_since", UTCDateTime(), nullable=True),
        sa.Column("offline_due_at", UTCDateTime(), nullable=True),
        sa.Column("alert_id", AutoString(length=64), nullable=True),
        sa.Column("alert_reason", AutoString(length=16), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("end_reason", AutoString(length=32), nullable=True),
        sa.Column("pos_lat", sa.Float(), nullable=True),
        sa.Column("pos_lon", sa.Float(), nullable=True),
        sa.Column("pos_acc_m", sa.Float(), nullable=True),
        sa.Column("pos_at", UTCDateTime(), nullable=True),
        sa.Column("pos_src", AutoString(length=16), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visit_session")),
        sa.UniqueConstraint("device_id", "session_id", name="uq_visit_session_device_id"),
    )
    op.create_index(op.f("ix_visit_session_device_id"), "visit_session", ["device_id"])
    op.create_index(op.f("ix_visit_session_alert_id"), "visit_session", ["alert_id"])
    # The timer sweep: running rows by due time.
    op.create_index("ix_visit_session_due", "visit_session", ["state", "due_at"])

    op.create_table(
        "worker_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dedupe_key", AutoString(length=120), nullable=False),
        sa.Column("kind", AutoString(length=20), nullable=False),
        sa.Column("worker_id", sa.Integer(), nullable=True),
        sa.Column("device_id", AutoString(length=64), nullable=True),
        sa.Column("alert_id", AutoString(length=64), nullable=True),
        sa.Column("phone", AutoString(length=20), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("status", AutoString(length=16), nullable=False),
        sa.Column("next_action_at", UTCDateTime(), nullable=False),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("claim_token", AutoString(length=36), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("provider_sid", AutoString(length=64), nullable=True),
        sa.Column("error", AutoString(length=300), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker_message")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_worker_message_dedupe_key")),
    )
    op.create_index(op.f("ix_worker_message_worker_id"), "worker_message", ["worker_id"])
    op.create_index(op.f("ix_worker_message_alert_id"), "worker_message", ["alert_id"])
    op.create_index("ix_worker_message_due", "worker_message", ["status", "next_action_at"])

    op.create_table(
        "worker_notice",
        sa.Column("device_id", AutoString(length=64), nullable=False),
        sa.Column("kind", AutoString(length=20), nullable=False),
        sa.Column("detected_at", UTCDateTime(), nullable=False),
        sa.Column("notified_at", UTCDateTime(), nullable=True),
        sa.Column("clear_since", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("device_id", "kind", name=op.f("pk_worker_notice")),
    )

    op.create_table(
        "worker_preference",
        sa.Column("worker_id", sa.Integer(), nullable=False),
        sa.Column("victim_support_opt_out", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_worker_preference")),
    )


def downgrade() -> None:
    op.drop_table("worker_preference")
    op.drop_table("worker_notice")
    op.drop_table("worker_message")
    op.drop_table("visit_session")
