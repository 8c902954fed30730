"""The accounts, read for ``vigie users list``.

Why not through the models: importing them brings SQLModel and SQLAlchemy's ORM (a fifth of a
second of a command that answers in half a second), for one query. The columns of the
``account`` table are reflected from the database itself
(``vigie.persistence.reflected_columns``: a few milliseconds), so their names and types are the
migrated schema's, never a second copy written by hand. ``tests/api/test_users_cli.py`` checks
that this reads what the models write.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, select

from vigie.persistence import reflected_columns


@dataclass(frozen=True, slots=True)
class Listed:
    """An account as the list shows it (never its password hash)."""

    username: str
    role: str
    departements: tuple[str, ...]
    disabled: bool


def list_accounts(conn: Connection) -> list[Listed]:
    """Every account, by user name."""
    account = reflected_columns(conn, "account")
    stmt = select(
        account.c.username, account.c.role, account.c.departements, account.c.disabled_at
    ).order_by(account.c.username)
    return [
        Listed(
            username=row.username,
            role=row.role,
            departements=tuple(row.departements or ()),
            disabled=row.disabled_at is not None,
        )
        for row in conn.execute(stmt)
    ]
