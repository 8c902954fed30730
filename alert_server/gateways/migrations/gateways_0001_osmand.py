"""Gateways: the OsmAnd identifiers of registered devices.

Revision ID: gateways_0001
Revises:
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision: str = "gateways_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("gateways",)
depends_on: str | Sequence[str] | None = "core_0001"


def upgrade() -> None:
    op.create_table(
        "osmand_identity",
        sa.Column("id_sha256", AutoString(length=64), nullable=False),
        sa.Column("device_id", AutoString(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["device.device_id"],
            name=op.f("fk_osmand_identity_device_id_device"),
        ),
        sa.PrimaryKeyConstraint("id_sha256", name=op.f("pk_osmand_identity")),
        sa.UniqueConstraint("device_id", name=op.f("uq_osmand_identity_device_id")),
    )


def downgrade() -> None:
    op.drop_table("osmand_identity")
