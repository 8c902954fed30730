"""Phone app: one-time enrolment codes.

Revision ID: phoneapp_0001
Revises:
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision: str = "phoneapp_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("phoneapp",)
depends_on: str | Sequence[str] | None = "core_0001"


def upgrade() -> None:
    op.create_table(
        "enrolment_code",
        sa.Column("code_sha256", AutoString(length=64), nullable=False),
        sa.Column("device_id", AutoString(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["device.device_id"],
            name=op.f("fk_enrolment_code_device_id_device"),
        ),
        sa.PrimaryKeyConstraint("code_sha256", name=op.f("pk_enrolment_code")),
    )
    op.create_index(
        op.f("ix_enrolment_code_device_id"), "enrolment_code", ["device_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_enrolment_code_device_id"), table_name="enrolment_code")
    op.drop_table("enrolment_code")
