"""Dispatch: when a notification was handed to the provider (reconciliation after a crash).

Revision ID: dispatch_0003
Revises: dispatch_0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision: str = "dispatch_0003"
down_revision: str | Sequence[str] | None = "dispatch_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dispatch_notification") as batch:
        batch.add_column(sa.Column("sending_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("body_sha256", AutoString(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dispatch_notification") as batch:
        batch.drop_column("body_sha256")
        batch.drop_column("sending_at")
