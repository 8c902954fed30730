"""Users: revocable API tokens (a per-account generation) and an index for audit filters.

Revision ID: users_0002
Revises: users_0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "users_0002"
down_revision: str | Sequence[str] | None = "users_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.add_column(
            sa.Column("token_generation", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_index(op.f("ix_audit_action"), "audit", ["action"])


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_action"), table_name="audit")
    with op.batch_alter_table("account") as batch:
        batch.drop_column("token_generation")
