"""Alert identity (device, alert_id), incidents of repeated presses, wrong-PIN lockout.

Revision ID: core_0003
Revises: core_0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision: str = "core_0003"
down_revision: str | Sequence[str] | None = "core_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alert") as batch:
        batch.add_column(sa.Column("device_alert_id", AutoString(length=64), nullable=True))
        batch.add_column(sa.Column("incident_of", AutoString(length=64), nullable=True))
        batch.add_column(
            sa.Column("presses", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )
        batch.add_column(sa.Column("last_press_at", UTCDateTime(), nullable=True))
    op.execute("UPDATE alert SET device_alert_id = alert_id, last_press_at = created_at")
    with op.batch_alter_table("alert") as batch:
        batch.alter_column("device_alert_id", existing_type=AutoString(length=64), nullable=False)
        batch.alter_column("presses", existing_type=sa.Integer(), server_default=None)
        batch.create_unique_constraint(op.f("uq_alert_device_id"), ["device_id", "device_alert_id"])
        batch.create_index(op.f("ix_alert_incident_of"), ["incident_of"])
    with op.batch_alter_table("device") as batch:
        batch.add_column(
            sa.Column("pin_failures", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(sa.Column("pin_failure_since", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("pin_locked_until", UTCDateTime(), nullable=True))
    with op.batch_alter_table("device") as batch:
        batch.alter_column("pin_failures", existing_type=sa.Integer(), server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("device") as batch:
        batch.drop_column("pin_locked_until")
        batch.drop_column("pin_failure_since")
        batch.drop_column("pin_failures")
    with op.batch_alter_table("alert") as batch:
        batch.drop_index(op.f("ix_alert_incident_of"))
        batch.drop_constraint(op.f("uq_alert_device_id"), type_="unique")
        batch.drop_column("last_press_at")
        batch.drop_column("presses")
        batch.drop_column("incident_of")
        batch.drop_column("device_alert_id")
