"""Foundation: workers, devices (with presence), alerts and their timeline.

Revision ID: core_0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision: str = "core_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("core",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "worker",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", AutoString(length=200), nullable=False),
        sa.Column("role", AutoString(length=20), nullable=False),
        sa.Column("phone", AutoString(length=20), nullable=False),
        sa.Column("pin_hash", AutoString(length=200), nullable=False),
        sa.Column("duress_pin_hash", AutoString(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker")),
    )
    op.create_table(
        "device",
        sa.Column("device_id", AutoString(length=64), nullable=False),
        sa.Column("worker_id", sa.Integer(), nullable=False),
        sa.Column("mqtt_username", AutoString(length=64), nullable=False),
        sa.Column("site_lat", sa.Float(), nullable=True),
        sa.Column("site_lon", sa.Float(), nullable=True),
        sa.Column("site_label", AutoString(length=200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=True),
        sa.Column("batt", sa.Integer(), nullable=True),
        sa.Column("charging", sa.Boolean(), nullable=True),
        sa.Column("last_lat", sa.Float(), nullable=True),
        sa.Column("last_lon", sa.Float(), nullable=True),
        sa.Column("last_acc_m", sa.Float(), nullable=True),
        sa.Column("last_pos_at", UTCDateTime(), nullable=True),
        sa.Column("last_pos_src", AutoString(length=10), nullable=True),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["worker.id"], name=op.f("fk_device_worker_id_worker")
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device")),
    )
    op.create_index(op.f("ix_device_worker_id"), "device", ["worker_id"])
    op.create_table(
        "alert",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", AutoString(length=64), nullable=False),
        sa.Column("device_id", AutoString(length=64), nullable=False),
        sa.Column("kind", AutoString(length=32), nullable=False),
        sa.Column("original_kind", AutoString(length=64), nullable=True),
        sa.Column("state", AutoString(length=16), nullable=False),
        sa.Column("duress", sa.Boolean(), nullable=False),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("device_ts", UTCDateTime(), nullable=True),
        sa.Column("batt", sa.Integer(), nullable=True),
        sa.Column("pos_lat", sa.Float(), nullable=True),
        sa.Column("pos_lon", sa.Float(), nullable=True),
        sa.Column("pos_acc_m", sa.Float(), nullable=True),
        sa.Column("pos_at", UTCDateTime(), nullable=True),
        sa.Column("pos_src", AutoString(length=16), nullable=True),
        sa.Column("departement", AutoString(length=3), nullable=True),
        sa.Column("commune_code", AutoString(length=5), nullable=True),
        sa.Column("commune_nom", AutoString(length=100), nullable=True),
        sa.Column("force", AutoString(length=2), nullable=True),
        sa.Column("dispatched_at", UTCDateTime(), nullable=True),
        sa.Column("acknowledged_at", UTCDateTime(), nullable=True),
        sa.Column("acknowledged_by", AutoString(length=200), nullable=True),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.Column("outcome", AutoString(length=64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert")),
        sa.UniqueConstraint("alert_id", name=op.f("uq_alert_alert_id")),
    )
    op.create_index(op.f("ix_alert_device_id"), "alert", ["device_id"])
    op.create_index(op.f("ix_alert_state"), "alert", ["state"])
    op.create_index(op.f("ix_alert_created_at"), "alert", ["created_at"])
    op.create_index(op.f("ix_alert_departement"), "alert", ["departement"])
    op.create_index(op.f("ix_alert_dispatched_at"), "alert", ["dispatched_at"])
    op.create_table(
        "alert_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", AutoString(length=64), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("type", AutoString(length=40), nullable=False),
        sa.Column("actor", AutoString(length=200), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_event")),
    )
    op.create_index(op.f("ix_alert_event_alert_id"), "alert_event", ["alert_id"])


def downgrade() -> None:
    op.drop_table("alert_event")
    op.drop_table("alert")
    op.drop_table("device")
    op.drop_table("worker")
