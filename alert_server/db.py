"""Database engine, sessions and migrations; nothing else.

SQLite (WAL) is the default for one machine; PostgreSQL (psycopg 3) is the production database
and the one several servers share.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, MetaData, create_engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, SQLModel

# Named constraints, so that SQLite batch migrations can refer to them.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Each package owns an Alembic branch in its own folder (dispatch never imports alert_server).
VERSION_LOCATIONS = (
    MIGRATIONS_DIR / "versions",
    Path(__file__).parent / "geo" / "migrations",
    Path(__file__).parent / "users" / "migrations",
    Path(__file__).parent / "sessions" / "migrations",
    Path(__file__).parent / "gateways" / "migrations",
    Path(__file__).parent.parent / "dispatch" / "migrations",
)
# Arbitrary constant: serialises migrations when several servers start on one PostgreSQL.
_PG_MIGRATION_LOCK = 0x56494749  # "VIGI"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Engine for ``url``; SQLite gets WAL, a busy timeout and real transactions."""
    if url.startswith("postgresql://"):
        # Plain postgresql:// would select psycopg2; Vigie ships psycopg 3.
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            # As many as the server's threads that may each hold one (ingest, pipeline and
            # dispatch workers, scheduler jobs, API requests) while queueing on the write lock.
            **{"pool_size": 10, "max_overflow": 30, **kwargs},
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Python 3.11's sqlite3 manages transactions itself and does not emit BEGIN for
            # every statement; let SQLAlchemy do it (SQLAlchemy's documented recipe).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives an application crash (only power loss can undo the
            # last commits), which is the failure the server is tested against.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, **kwargs)


def alembic_config(engine: Engine) -> Config:
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
    cfg = alembic_config(engine)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            conn.commit()
            try:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "heads")
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                conn.commit()
    else:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "heads")


@contextmanager
def session_scope(engine: Engine, *, write: bool = True) -> Iterator[Session]:
    """A session that commits on success and rolls back on error.

    On SQLite it takes the write lock before anything is read (``write=False`` for a
    read-only scope): a WAL transaction that reads and then writes fails at once ("database
    is locked", no busy wait) if another connection committed in between, whereas waiting
    for the lock up front queues politely on the busy timeout. Never open one scope inside
    another on the same SQLite database: the inner one would wait for the outer.
    """
    with Session(engine, expire_on_commit=False) as session:
        try:
            if write and is_sqlite(engine):
                session.connection().exec_driver_sql("UPDATE alert SET state = state WHERE 1 = 0")
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


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
    # Connection failures, administrator shutdown, crash recovery, deadlocks and
    # serialisation failures: all psycopg.OperationalError, all worth the same retry.
    return isinstance(orig, psycopg.OperationalError)


def metadata() -> MetaData:
    """All tables, with every model module imported (for migration checks)."""
    import alert_server.models  # noqa: F401  (registers every table)

    return SQLModel.metadata
