"""Dispatch: verification of automatic alarms (the worker's own phone is called first).

Revision ID: dispatch_0002
Revises: dispatch_0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision: str = "dispatch_0002"
down_revision: str | Sequence[str] | None = "dispatch_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dispatch_verification",
        sa.Column("alert_id", AutoString(length=64), nullable=False),
        sa.Column("phone", AutoString(length=20), nullable=False),
        sa.Column("status", AutoString(length=16), nullable=False),
        sa.Column("reason", AutoString(length=32), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("deadline_at", UTCDateTime(), nullable=False),
        sa.Column("hold_s", sa.Float(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("digits", AutoString(length=8), nullable=True),
        sa.PrimaryKeyConstraint("alert_id", name=op.f("pk_dispatch_verification")),
    )


def downgrade() -> None:
    op.drop_table("dispatch_verification")
