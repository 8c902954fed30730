"""Referents: the stored referent directory (newest row wins).

Revision ID: geo_0002
Revises: geo_0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision: str = "geo_0002"
down_revision: str | Sequence[str] | None = "geo_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "referent_directory",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", AutoString(length=500), nullable=False),
        sa.Column("sha256", AutoString(length=64), nullable=False),
        sa.Column("yaml_text", sa.Text(), nullable=False),
        sa.Column("loaded_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referent_directory")),
    )


def downgrade() -> None:
    op.drop_table("referent_directory")
