"""Dispatch: inbound SMS by number and time (wrong acknowledgement codes per number).

Revision ID: dispatch_0006
Revises: dispatch_0005
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "dispatch_0006"
down_revision: str | Sequence[str] | None = "dispatch_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_dispatch_inbound_from_phone_received",
        "dispatch_inbound",
        ["from_phone", "received_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_dispatch_inbound_from_phone_received", table_name="dispatch_inbound")
