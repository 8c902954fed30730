"""Alembic environment of dispatch alone: the connection is handed in by ``dispatch.db``."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import dispatch.models  # noqa: F401  (registers dispatch's tables)

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
