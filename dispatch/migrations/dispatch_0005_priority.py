"""Dispatch: priority classes of notifications (0 urgent, 1 repeat pass, 2 information).

The column is back-filled from the kind and the round; the claim index (status, priority,
next_action_at) and an index to find a number's next free slot (phone, status,
next_action_at) are added.

Revision ID: dispatch_0005
Revises: dispatch_0004
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "dispatch_0005"
down_revision: str | Sequence[str] | None = "dispatch_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dispatch_notification") as batch:
        batch.add_column(
            sa.Column("priority", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
    # The same rule as ``dispatch.models.priority_of`` (written out: a migration must not
    # change meaning when the code does).
    op.execute(
        "UPDATE dispatch_notification SET priority = 1 WHERE kind = 'alert' AND round_no > 0"
    )
    op.execute(
        "UPDATE dispatch_notification SET priority = 2 WHERE kind IN ('ack_info', 'stand_down')"
    )
    with op.batch_alter_table("dispatch_notification") as batch:
        batch.alter_column("priority", existing_type=sa.Integer(), server_default=None)
    op.create_index(
        "ix_dispatch_notification_claim",
        "dispatch_notification",
        ["status", "priority", "next_action_at"],
    )
    op.create_index(
        "ix_dispatch_notification_phone_next",
        "dispatch_notification",
        ["phone", "status", "next_action_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_dispatch_notification_phone_next", table_name="dispatch_notification")
    op.drop_index("ix_dispatch_notification_claim", table_name="dispatch_notification")
    with op.batch_alter_table("dispatch_notification") as batch:
        batch.drop_column("priority")
