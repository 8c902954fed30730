"""Every département an alert concerns (ambiguous borders, moving alerts).

Revision ID: core_0002
Revises: core_0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision: str = "core_0002"
down_revision: str | Sequence[str] | None = "core_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_departement",
        sa.Column("alert_id", AutoString(length=64), nullable=False),
        sa.Column("departement", AutoString(length=3), nullable=False),
        sa.Column("added_at", UTCDateTime(), nullable=False),
        sa.Column("reason", AutoString(length=20), nullable=False),
        sa.PrimaryKeyConstraint("alert_id", "departement", name=op.f("pk_alert_departement")),
    )
    op.create_index(op.f("ix_alert_departement_departement"), "alert_departement", ["departement"])


def downgrade() -> None:
    op.drop_table("alert_departement")
