"""The alert server's database: its migrations (every package's Alembic branch); the engine,
the read and write scopes and the other mechanisms come from ``vigie.persistence``.

SQLite (WAL) is the default for one machine; PostgreSQL (psycopg 3) is the production database
and the one several servers share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel

from alert_server.migration_heads import MIGRATIONS_DIR, VERSION_LOCATIONS, is_current
from vigie.persistence import (
    NAMING_CONVENTION,
    is_sqlite,
    make_engine,
    read_scope,
    run_migrations,
    write_scope,
    write_transaction,
)

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "alembic_config",
    "database_unavailable",
    "is_sqlite",
    "make_engine",
    "migrate",
    "read_scope",
    "write_scope",
    "write_transaction",
]

SQLModel.metadata.naming_convention = NAMING_CONVENTION


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option(
        "version_locations", ":".join(str(p) for p in VERSION_LOCATIONS if p.is_dir())
    )
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Apply every migration (all heads). Safe when several servers start at once."""
    # Already current (every start after the first): nothing to do, and no need to import
    # Alembic (about a second) to find that out.
    if is_current(engine):
        return
    run_migrations(engine, alembic_config(engine), "heads")


# SQLite primary result codes meaning "the database cannot take this write now", whatever the
# statement: BUSY, LOCKED, IOERR, FULL, CANTOPEN.
_SQLITE_UNAVAILABLE = frozenset({5, 6, 10, 13, 14})


def database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` says the database as a whole is out of reach or cannot write (server
    down or restarting, connection lost, locked, disk full), as opposed to a fault of the data
    being written. Work that failed this way is retried as it is, never degraded or dropped."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _SQLITE_UNAVAILABLE
    import psycopg

    # Connection failures, administrator shutdown, crash recovery, deadlocks and
    # serialisation failures: all psycopg.OperationalError, all worth the same retry.
    return isinstance(orig, psycopg.OperationalError)
