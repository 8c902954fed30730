"""Dispatch: acknowledgement codes that cannot run out (3 digits while free, then longer).

Codes up to 8 characters on the code reservations, the escalations and the notifications, and
an index on (phone, code): a few candidate codes are checked at once.

Revision ID: dispatch_0004
Revises: dispatch_0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision: str = "dispatch_0004"
down_revision: str | Sequence[str] | None = "dispatch_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _open_codes_index() -> None:
    op.create_index(
        "uq_dispatch_ack_code_open",
        "dispatch_ack_code",
        ["phone", "code"],
        unique=True,
        sqlite_where=sa.text("released_at IS NULL"),
        postgresql_where=sa.text("released_at IS NULL"),
    )


def _code_length(table: str, column: str, old: int, new: int, *, nullable: bool) -> None:
    with op.batch_alter_table(table) as batch:
        batch.alter_column(
            column,
            existing_type=AutoString(length=old),
            type_=AutoString(length=new),
            nullable=nullable,
        )


def upgrade() -> None:
    # SQLite rebuilds the table in batch mode: the partial unique index is dropped and created
    # again explicitly, so that its WHERE clause cannot be lost on the way.
    op.drop_index("uq_dispatch_ack_code_open", table_name="dispatch_ack_code")
    _code_length("dispatch_ack_code", "code", 3, 8, nullable=False)
    _open_codes_index()
    op.create_index("ix_dispatch_ack_code_phone_code", "dispatch_ack_code", ["phone", "code"])
    _code_length("dispatch_escalation", "ack_code", 3, 8, nullable=False)
    _code_length("dispatch_notification", "ack_code", 3, 8, nullable=True)


def downgrade() -> None:
    # Fails (PostgreSQL) once a code longer than 3 digits was given: they cannot be shortened.
    _code_length("dispatch_notification", "ack_code", 8, 3, nullable=True)
    _code_length("dispatch_escalation", "ack_code", 8, 3, nullable=False)
    op.drop_index("ix_dispatch_ack_code_phone_code", table_name="dispatch_ack_code")
    op.drop_index("uq_dispatch_ack_code_open", table_name="dispatch_ack_code")
    _code_length("dispatch_ack_code", "code", 8, 3, nullable=False)
    _open_codes_index()
