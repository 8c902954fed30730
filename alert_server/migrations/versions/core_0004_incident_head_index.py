"""Index of incidents' first alerts by device, kind and last press (the per-press lookup).

Revision ID: core_0004
Revises: core_0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "core_0004"
down_revision: str | Sequence[str] | None = "core_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_alert_incident_head",
        "alert",
        ["device_id", "kind", "last_press_at"],
        sqlite_where=sa.text("incident_of IS NULL"),
        postgresql_where=sa.text("incident_of IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_alert_incident_head", table_name="alert")
