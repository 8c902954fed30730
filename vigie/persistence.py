"""Persistence mechanisms written once, for every package (alert server, dispatch, follow-up).

Why one module: the same few database idioms carry Vigie's promises (an alert stored once, a
send claimed by one server, a timer fired once), and each used to be written several times
with small differences. Here they are written once, for SQLite (WAL, one machine) and
PostgreSQL (several servers):

- ``make_engine``: the engine, with SQLite's pragmas and real transactions;
- ``run_migrations``: Alembic, serialised across servers starting together on PostgreSQL;
- ``read_scope`` / ``write_scope``: a transaction that only reads, or one that writes and
  therefore takes SQLite's write lock up front (``take_write_lock``, the one SQLite trick);
  ``write_transaction``: the same without the ORM, for the ingest writer's alerts, and
  ``KeptConnection``: the same on one connection kept between transactions;
- ``insert_ignore``: INSERT … ON CONFLICT DO NOTHING that says whether it inserted;
- ``Prepared``: a Core statement compiled once and run on the driver's cursor, for the few
  statements the ingest writer runs at every press;
- ``any_row``: the look a periodic job takes without the write lock before it claims;
- ``pick_due`` / ``claim_due`` / ``release_claim``: the claim/lease loop (pick due rows
  nobody else holds, claim them with a token and a lease, run, release by compare-and-set).

Imports nothing from ``alert_server``, ``dispatch`` or ``device_sim``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Engine,
    MetaData,
    Select,
    Table,
    create_engine,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    # Alembic is imported when there is a migration to run (a second of every start).
    from alembic.config import Config

    # SQLModel (and with it SQLAlchemy's ORM) only where a session is opened: a read-only
    # command that reads through a plain connection does without both (a fifth of a second).
    from sqlmodel import Session

    Bind = Engine | Connection | Session
    # What the ingest writer's statements run on: a session, or a bare connection when a
    # batch holds only alerts (written with Core statements alone, no unit of work).
    Db = Connection | Session

_log = logging.getLogger(__name__)

# Named constraints, so that SQLite batch migrations can refer to them. Every package's tables
# share SQLModel's metadata, so every package applies the same convention.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Execution option set by ``write_scope`` on SQLite: its transaction starts with BEGIN IMMEDIATE.
_WRITE_OPTION = "vigie_write_lock"

# Arbitrary constant: serialises migrations when several servers start on one PostgreSQL.
PG_MIGRATION_LOCK = 0x56494749  # "VIGI"


def dialect_name(bind: Bind) -> str:
    """``sqlite`` or ``postgresql`` for an engine, a connection or a session."""
    if isinstance(bind, Engine | Connection):
        return bind.dialect.name
    return bind.get_bind().dialect.name


def is_sqlite(bind: Bind) -> bool:
    return dialect_name(bind) == "sqlite"


def sqlite_memory() -> Callable[[], float] | None:
    """A reader of the memory SQLite holds in this process (bytes): every connection's page
    cache, prepared statements and schema. None when the library this interpreter's
    ``sqlite3`` uses does not export its memory statistics.

    The figure is SQLite's own ``sqlite3_memory_used``, read from the very library the
    ``sqlite3`` module is linked with (looked up through that module's file, which finds the
    library whether it is linked in or shared), so it counts the server's connections and
    nothing else."""
    import ctypes

    try:
        import _sqlite3

        used = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    except (ImportError, OSError, AttributeError):
        return None
    used.restype = ctypes.c_int64
    used.argtypes = []
    return lambda: float(used())


# --- engine and migrations ------------------------------------------------------------------


# SQLite's own checkpoint, run by whichever commit takes the write-ahead log past this many
# pages, when the server's ``WalCheckpointer`` has not kept it below (it normally does).
WAL_BACKSTOP_PAGES = 10_000


def make_engine(url: str, *, checkpoints_elsewhere: bool = False, **kwargs: Any) -> Engine:
    """Engine for ``url``; SQLite gets WAL, a busy timeout and real transactions.

    ``checkpoints_elsewhere``: on SQLite, this process runs a ``WalCheckpointer``; its commits
    leave the copy of the log into the database to it (up to ``WAL_BACKSTOP_PAGES``)."""
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
            if checkpoints_elsewhere:
                # By default the commit that takes the log past 1,000 pages copies it into the
                # database and syncs it: every sixtieth alert's receipt waited 5-7 ms for it.
                cur.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
            cur.close()

        # The same 30 s as the busy timeout above, for the threads of this process.
        gate = WriteGate.install(engine, timeout_s=30.0)

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # A write scope asks for the write lock with its BEGIN (``write_scope``). Sent
            # to the driver directly: every transaction pays it, the writer's at every press,
            # and SQLAlchemy's execution path around it cost several times the statement.
            dbapi_conn = conn.connection.dbapi_connection
            if conn.get_execution_options().get(_WRITE_OPTION):
                # If this raises (``DatabaseBusy`` after 30 s), SQLAlchemy leaves the
                # connection half-begun: every caller gives that connection up (the session
                # closes it, ``KeptConnection`` drops it), and so must any new one.
                gate.acquire(dbapi_conn)
                try:
                    dbapi_conn.execute("BEGIN IMMEDIATE")
                except BaseException:
                    gate.release(dbapi_conn)
                    raise
            else:
                dbapi_conn.execute("BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, **kwargs)


class WalCheckpointer:
    """Copies SQLite's write-ahead log into the database from a thread of its own, so that no
    writer pays for it at its commit (an engine made with ``checkpoints_elsewhere``).

    A passive checkpoint every ``interval_s`` on a connection outside the pool, when anything
    was committed since the last one: it takes no lock a writer waits for, never waits itself,
    and copies what no reader still needs. If this thread falls behind or fails (a full disk),
    the writers' own checkpoint at ``WAL_BACKSTOP_PAGES`` bounds the log. Does nothing on
    PostgreSQL, on a database in memory, or on one not in WAL mode.

    Once all of the log is copied, the next commit starts it again from its beginning, and
    that commit writes the log's header and syncs it to disk (SQLite does so at every restart
    of the log). That commit was the next alert's: with alerts minutes apart, every one of them
    waited for a sync before its receipt. So this thread restarts the log itself, right after a
    checkpoint that copied all of it, with a one-page write (the database's ``user_version``,
    rewritten unchanged) taken through the process's write gate only when no writer holds or
    waits for it; the writers' commits then only append to the log.
    """

    def __init__(self, engine: Engine, *, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        self._path = database if database and database != ":memory:" else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_warning: float | None = None
        # Checkpoints that failed (each logged, once a minute at most), and what the last one
        # that did not fail found: the pages in the log, and those of them in the database.
        self.failures = 0
        self.last: tuple[int, int] | None = None
        # Times this thread started the log again itself.
        self.restarts = 0
        self._gate = WriteGate.of(engine)

    def start(self) -> None:
        if self._path is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="vigie-wal-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        assert self._path is not None
        conn = sqlite3.connect(self._path, timeout=0, isolation_level=None)
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                return
            copied_at: int | None = None
            while not self._stop.wait(self.interval_s):
                copied_at = self.round(conn, copied_at)
        finally:
            conn.close()

    def round(self, conn: sqlite3.Connection, copied_at: int | None) -> int | None:
        """One round of the thread: a checkpoint if anything was committed since the one at
        ``copied_at`` (``PRAGMA data_version``), then the restart if it copied all of the log.
        Returns the version now copied. Never raises for a database error (counted, logged)."""
        # Changed by every commit of another connection (this thread's own restart does not
        # change it): nothing committed, nothing to copy. Copying the page of its own restart
        # would only make the next commit start the log again.
        try:
            version: int | None = conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            version = None  # unknown: the checkpoint is tried (and its failure told)
        if version is not None and version == copied_at:
            return copied_at
        done = self.checkpoint(conn)
        if done is None:
            return copied_at
        in_log, copied = done
        if in_log > 0 and copied == in_log:
            self.restart_log(conn)
        return version

    def restart_log(self, conn: sqlite3.Connection) -> bool:
        """Start the log again from its beginning with a one-page commit of this thread's, if
        the write lock is free at once (never waited for: a writer waiting for it is served
        first, and then restarts the log itself). True if committed."""
        if self._gate is not None and not self._gate.try_acquire(conn):
            return False
        try:
            # The connection waits for no lock (timeout 0): another process writing means
            # SQLITE_BUSY at once, and the restart is left to the next writer.
            conn.execute("BEGIN IMMEDIATE")
            try:
                (version,) = conn.execute("PRAGMA user_version").fetchone()
                conn.execute(f"PRAGMA user_version = {int(version)}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error:
            return False
        finally:
            if self._gate is not None:
                self._gate.release(conn)
        self.restarts += 1
        return True

    def checkpoint(self, conn: sqlite3.Connection) -> tuple[int, int] | None:
        """One passive checkpoint: the pages in the log and those of them now in the database
        (None if it failed)."""
        try:
            _busy, in_log, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.last = (in_log, copied)
            return self.last
        except sqlite3.Error as exc:
            self.failures += 1
            now = time.monotonic()
            if self._last_warning is None or now - self._last_warning >= 60:
                self._last_warning = now
                _log.warning(
                    "SQLite log not copied into the database (%s): commits copy it themselves "
                    "past %d pages",
                    exc,
                    WAL_BACKSTOP_PAGES,
                )
            return None


def run_migrations(engine: Engine, cfg: Config, target: str = "heads") -> None:
    """``alembic upgrade target`` on ``engine``. Safe when several servers start at once: on
    PostgreSQL an advisory lock makes them migrate one after the other."""
    from alembic import command

    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_MIGRATION_LOCK})
            conn.commit()
            try:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, target)
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_MIGRATION_LOCK})
                conn.commit()
    else:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, target)


# --- reading without the models -------------------------------------------------------------


def reflected_columns(conn: Connection, name: str) -> Table:
    """Table ``name`` with its columns and their types as the database declares them, for a
    read-only command that would otherwise import SQLModel and every model for one query.

    Only the columns are reflected: no keys, indexes or constraints, which a query does not
    need and which cost three times as much to read on PostgreSQL (its catalog queries are
    built and compiled by SQLAlchemy: 15 ms against 48 ms for two tables)."""
    columns = inspect(conn).get_columns(name)
    return Table(name, MetaData(), *(Column(c["name"], c["type"]) for c in columns))


# --- transactions ---------------------------------------------------------------------------


def take_write_lock(session: Session) -> None:
    """On SQLite, take the database's write lock now, before anything is read. No-op elsewhere.

    In WAL mode a transaction that read and then writes fails at once ("database is locked",
    no busy wait) if another connection committed in between; taking the lock up front queues
    politely on the busy timeout instead. A write statement that changes nothing takes it; the
    Alembic version table exists in every migrated Vigie database.
    """
    if is_sqlite(session):
        queue_for_write_lock(session)
        session.execute(text("UPDATE alembic_version SET version_num = version_num WHERE 1 = 0"))


def queue_for_write_lock(session: Db) -> None:
    """On SQLite, wait for this process's turn at the write lock (``WriteGate``) before a
    transaction's first write. No-op elsewhere, or when this transaction already has it."""
    if is_sqlite(session):
        conn = connection_of(session)
        gate = WriteGate.of(conn.engine)
        if gate is not None:
            gate.acquire(conn.connection.dbapi_connection)


class DatabaseBusy(sqlite3.OperationalError):
    """The write lock was not had within the busy timeout: "database is locked", as SQLite
    says it (its error code, for ``database_unavailable``)."""

    sqlite_errorcode = 5  # SQLITE_BUSY
    sqlite_errorname = "SQLITE_BUSY"


class WriteGate:
    """The SQLite write lock as one process's threads queue for it: first come, first served,
    each handed the lock the moment the previous writer commits or rolls back.

    Without it they queued on SQLite's busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25 …
    100 ms between tries: a writer that found the lock taken slept past its release, and
    another thread writing again in between took it first. Measured with one thread holding
    the lock for 3 ms in every 4: the other waited 54 ms at the median and 2.3 s at worst,
    where one transaction's wait was due (issue #18; the ingest writer, the pipeline and the
    dispatch send workers all write). Other processes (the command line) still meet SQLite's
    own lock and busy timeout.

    Taken with BEGIN IMMEDIATE (``write_scope``, ``write_transaction``, ``KeptConnection``),
    by ``take_write_lock`` and by ``claim_due``; given back by the DBAPI commit or rollback of
    the connection holding it (the dialect's own, including the pool's rollback of a
    connection returned), or when that connection is closed or invalidated. A connection
    holding it must never be ``detach()``-ed from the pool: nothing would give it back."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        # Re-entrant, and nothing the collector tracks is made while it is held: a collection
        # may finalise a forgotten connection, whose rollback comes back here (``release``) on
        # the same thread; with a plain lock that thread, and every writer after it, would
        # wait forever.
        self._lock = threading.RLock()
        self._owner: Any = None
        self._waiters: deque[tuple[threading.Event, list[Any]]] = deque()

    @classmethod
    def install(cls, engine: Engine, *, timeout_s: float) -> WriteGate:
        gate = cls(timeout_s)
        engine.dialect._vigie_write_gate = gate  # type: ignore[attr-defined]
        dialect = engine.dialect
        commit, rollback = dialect.do_commit, dialect.do_rollback

        def do_commit(dbapi_connection: Any) -> None:
            # A COMMIT that failed leaves the transaction open: the rollback that follows it
            # gives the lock back, not this.
            commit(dbapi_connection)
            gate.release(_raw(dbapi_connection))

        def do_rollback(dbapi_connection: Any) -> None:
            try:
                rollback(dbapi_connection)
            finally:
                gate.release(_raw(dbapi_connection))

        dialect.do_commit = do_commit  # type: ignore[method-assign]
        dialect.do_rollback = do_rollback  # type: ignore[method-assign]
        # Not "soft_invalidate": such a connection finishes its transaction first.
        for name in ("invalidate", "close", "close_detached"):
            event.listen(engine, name, lambda dbapi_connection, *_: gate.release(dbapi_connection))
        return gate

    @staticmethod
    def of(engine: Engine) -> WriteGate | None:
        return getattr(engine.dialect, "_vigie_write_gate", None)

    def acquire(self, dbapi_connection: Any) -> None:
        """Wait for the lock (first come, first served); raises ``DatabaseBusy`` after the
        timeout. Already held by this connection: nothing to do."""
        turn = (threading.Event(), [dbapi_connection])  # made before the lock is taken
        with self._lock:
            if self._owner is dbapi_connection:
                return
            if self._owner is None and not self._waiters:
                self._owner = dbapi_connection
                return
            self._waiters.append(turn)
        if turn[0].wait(self.timeout_s):
            return
        with self._lock:
            if turn[0].is_set():  # handed over as the wait ended
                return
            self._waiters.remove(turn)
        raise DatabaseBusy("database is locked")

    def try_acquire(self, dbapi_connection: Any) -> bool:
        """Take the lock only if no one holds it or waits for it; never waits."""
        with self._lock:
            if self._owner is None and not self._waiters:
                self._owner = dbapi_connection
                return True
            return self._owner is dbapi_connection

    def release(self, dbapi_connection: Any) -> None:
        """Give the lock back if ``dbapi_connection`` holds it: to the next waiter directly."""
        handed: threading.Event | None = None
        with self._lock:
            if self._owner is None or self._owner is not dbapi_connection:
                return
            if self._waiters:
                handed, (self._owner,) = self._waiters.popleft()
            else:
                self._owner = None
        if handed is not None:
            handed.set()

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiters)


def _raw(dbapi_connection: Any) -> Any:
    """The driver's connection under a pool's proxy (what the gate knows its holders by)."""
    return getattr(dbapi_connection, "dbapi_connection", dbapi_connection)


@contextmanager
def write_scope(engine: Engine) -> Iterator[Session]:
    """A transaction that writes: commits on success, rolls back on error. On SQLite it takes
    the write lock first (BEGIN IMMEDIATE, the same wait as ``take_write_lock``). Never open a
    scope inside another on the same SQLite database: the inner one would wait for the outer."""
    from sqlmodel import Session

    with Session(engine, expire_on_commit=False) as session:
        try:
            if engine.dialect.name == "sqlite":
                # BEGIN IMMEDIATE: the lock comes with the transaction's first statement
                # rather than costing one more (``take_write_lock``'s empty UPDATE).
                session.connection(execution_options={_WRITE_OPTION: True})
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """``write_scope`` without the ORM: a bare connection in a transaction that writes, for
    the ingest writer's batches of alerts, which it stores with Core statements only (a
    session and its unit of work cost a quarter of each alert's time there). Same lock
    (BEGIN IMMEDIATE on SQLite), same commit on success and rollback on error."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            yield conn


class KeptConnection:
    """``write_transaction`` on one connection kept from one transaction to the next, for
    the one thread that writes at every message (the ingest writer). Taking a connection
    from the pool at every batch cost a checkout, a reset on return and, on PostgreSQL, a
    ping round trip: most of what came before the first statement of a press.

    The connection is given up whenever a transaction on it fails, whatever the reason (a
    database restart, a lost connection, a bug): the next transaction starts on a new one
    from the pool, which checks it as usual. Only one thread may use it; ``close`` when the
    thread ends."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None
        # How many connections it has taken from the pool (for the tests).
        self.connects = 0
        # The last transaction failed because the database had dropped the connection kept
        # since an earlier one (a restart while idle): trying again on a new one is right.
        self.lost_while_kept = False

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        conn = self._conn
        kept = conn is not None
        if conn is None:
            conn = self.engine.connect()
            self.connects += 1
            if self.engine.dialect.name == "sqlite":
                conn.execution_options(**{_WRITE_OPTION: True})
            self._conn = conn
        try:
            with conn.begin():
                yield conn
        except BaseException:
            self.lost_while_kept = kept and conn.invalidated
            self.close()
            raise
        self.lost_while_kept = False

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # A lost connection's reset fails inside the pool, which then discards it.
            with suppress(Exception):
                conn.close()


def connection_of(db: Db) -> Connection:
    """The connection under a session (its transaction's), or the connection itself."""
    return db if isinstance(db, Connection) else db.connection()


@contextmanager
def read_scope(engine: Engine) -> Iterator[Session]:
    """A transaction that only reads: no write lock, and nothing is ever committed (closing
    the session ends the transaction without a commit, so a write slipped in by mistake is
    undone). Objects read stay loaded after the scope, detached."""
    from sqlmodel import Session

    with Session(engine, expire_on_commit=False) as session:
        yield session


# --- insert or ignore -----------------------------------------------------------------------


def insert_ignore(
    session: Db,
    table: Table | Any,
    rows: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    keys: Sequence[str] | None = None,
) -> int:
    """``INSERT … ON CONFLICT (keys) DO NOTHING`` (any unique key when ``keys`` is None) for
    one row or several; returns how many rows this statement inserted.

    ``table`` is a ``Table`` or a SQLModel class. RETURNING rather than rowcount: psycopg
    reports -1 for some INSERTs, and rowcount is not reliable for ON CONFLICT across drivers.
    """
    tbl: Table = table if isinstance(table, Table) else table.__table__
    batch = [rows] if isinstance(rows, Mapping) else list(rows)
    if not batch:
        return 0
    stmt = insert_ignore_statement(dialect_name(session), tbl, keys)
    conn = connection_of(session)
    # The rows are parameters of one statement built once, not ``.values()`` of a new one:
    # building and keying a statement per row was most of an alert's cost in the ingest writer.
    return sum(len(conn.execute(stmt, dict(row)).all()) for row in batch)


_INSERT_IGNORE: dict[tuple[str, Table, tuple[str, ...] | None, str | None], Any] = {}


def insert_ignore_statement(
    dialect: str, tbl: Table, keys: Sequence[str] | None = None, returning: str | None = None
) -> Any:
    """``insert_ignore``'s statement for ``dialect`` (its name), built once. It returns the
    primary key of each row it inserted, or the column ``returning``."""
    keys = tuple(keys) if keys else None
    cached = _INSERT_IGNORE.get((dialect, tbl, keys, returning))
    if cached is None:
        # Imported here: light commands never insert this way (the PostgreSQL dialect is ~50 ms).
        from sqlalchemy.dialects import postgresql, sqlite

        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        cached = (
            insert(tbl)
            .on_conflict_do_nothing(index_elements=keys)
            .returning(*([tbl.c[returning]] if returning else tbl.primary_key.columns))
        )
        _INSERT_IGNORE[(dialect, tbl, keys, returning)] = cached
    return cached


# --- statements run at every press ---------------------------------------------------------


class Prepared:
    """A Core statement compiled once per dialect (and, for an INSERT, per set of columns
    given) and run on the driver's cursor of a connection, inside its transaction.

    For the few statements the ingest writer runs at every press: around each of them
    SQLAlchemy's execution path (execution context, compiled-cache lookup, parameter and
    result set-up, events) cost several times the statement itself (33 against 6 µs for the
    incident lookup on SQLite). Parameters and results go through the type processors
    SQLAlchemy itself would apply, Python-side column defaults are filled the same way, and a
    lost connection is invalidated as SQLAlchemy would. No execution events are emitted: a
    test that watches statements through ``before_cursor_execute`` does not see these.
    """

    __slots__ = ("_build", "_forms")

    def __init__(self, statement: Any = None, *, build: Callable[[str], Any] | None = None) -> None:
        """``statement``, or ``build``: the statement for a dialect's name (an INSERT … ON
        CONFLICT is written differently for each)."""
        if (statement is None) == (build is None):
            raise TypeError("Prepared takes a statement or a build function")
        self._build: Callable[[str], Any] = build or (lambda _dialect: statement)
        self._forms: dict[tuple[str, tuple[str, ...]], _Form] = {}

    def form(self, dialect: Any, keys: Iterable[str]) -> _Form:
        """The statement as sent to ``dialect``'s driver with parameters named ``keys``
        (compiled as SQLAlchemy compiles it for them: an INSERT's columns are those given)."""
        # Looked up first by the keys in the order given (a caller passes the same dict
        # shape every time): sorting two dozen names at every press cost more than the lookup.
        given = (dialect.name, tuple(keys))
        found = self._forms.get(given)
        if found is None:
            key = (dialect.name, tuple(sorted(given[1])))
            found = self._forms.get(key)
            if found is None:
                found = self._forms[key] = _Form(self._build(dialect.name), dialect, key[1])
            self._forms[given] = found
        return found

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run with one set of parameters; the rows it returns (none for a write without
        RETURNING)."""
        return self.form(conn.dialect, params).run(conn, [params], many=False)

    def first(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        found = self.rows(conn, params)
        return found[0] if found else None

    def many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run once for several sets of parameters (the driver's executemany), all with the
        keys of the first."""
        self.form(conn.dialect, rows[0]).run(conn, rows, many=True)


_GIVEN, _DEFAULT, _FIXED = 0, 1, 2


class _Form:
    """One compiled form of a ``Prepared`` statement."""

    __slots__ = ("_given", "_processed", "names", "plan", "positional", "results", "sql")

    def __init__(self, statement: Any, dialect: Any, keys: tuple[str, ...]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        if compiled.escaped_bind_names or compiled.post_compile_params:
            # Neither is reproduced here: write such a statement's values into its SQL.
            raise ValueError(f"statement not suited to Prepared: {compiled.string}")
        if compiled.update_prefetch:
            raise ValueError(f"statement with Python-side onupdate: {compiled.string}")
        self.sql: str = compiled.string
        self.positional: bool = bool(compiled.positional)
        # Each parameter under the name it has in the SQL (an anonymous one, such as the 1 of
        # ``presses + 1``, is keyed otherwise in ``compiled.binds``).
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        self.names: tuple[str, ...] = (
            tuple(compiled.positiontup) if self.positional else tuple(binds)
        )
        # An INSERT's columns left out by the caller that have a Python-side default.
        defaults: dict[str, Callable[[], Any]] = {}
        for column in compiled.insert_prefetch:
            default = column.default
            if default.is_scalar:
                defaults[column.key] = (lambda value: lambda: value)(default.arg)
            elif default.is_callable:
                # SQLAlchemy wraps a default taking no argument as one taking the context.
                defaults[column.key] = (lambda fn: lambda: fn(None))(default.arg)
            else:
                raise ValueError(f"column default not suited to Prepared: {column}")
        # Where each parameter's value comes from, decided once for these keys: the caller,
        # a column default, or the statement itself (a LIMIT, a literal bound by SQLAlchemy),
        # with the type's processor for this dialect.
        self.plan: tuple[tuple[int, Any, Any], ...] = tuple(
            self._source(name, binds[name], dialect, keys, defaults) for name in self.names
        )
        self.results: list[Any] = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in getattr(statement, "exported_columns", ())
        ]
        # When the caller gives every parameter (the presses' statements): all of them read
        # at once, then only those with a processor converted.
        self._given: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None = None
        if self.names and all(source == _GIVEN for source, _, _ in self.plan):
            getter = itemgetter(*self.names)
            self._given = getter if len(self.names) > 1 else lambda params: (getter(params),)
        self._processed: tuple[tuple[int, Any], ...] = tuple(
            (i, process) for i, (_, _, process) in enumerate(self.plan) if process is not None
        )

    @staticmethod
    def _source(
        name: str, bind: Any, dialect: Any, keys: tuple[str, ...], defaults: dict[str, Any]
    ) -> tuple[int, Any, Any]:
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if name in keys:
            return _GIVEN, name, process
        if name in defaults:
            return _DEFAULT, defaults[name], process
        if not bind.required and bind.callable is None:
            value = bind.effective_value
            return _FIXED, value if process is None else process(value), None
        given = ", ".join(keys) or "none"
        raise ValueError(f"parameter {name!r} missing (given: {given})")

    def bind(self, params: Mapping[str, Any]) -> Any:
        """``params`` as the driver takes them for this form."""
        if self._given is not None:
            given = self._given(params)
            if self._processed:
                converted = list(given)
                for i, process in self._processed:
                    converted[i] = process(converted[i])
                given = tuple(converted)
            return given if self.positional else dict(zip(self.names, given, strict=True))
        values = []
        for source, ref, process in self.plan:
            value = params[ref] if source == _GIVEN else ref() if source == _DEFAULT else ref
            values.append(value if process is None else process(value))
        return tuple(values) if self.positional else dict(zip(self.names, values, strict=True))

    def run(
        self, conn: Connection, rows: Sequence[Mapping[str, Any]], *, many: bool
    ) -> list[tuple[Any, ...]]:
        if not conn.in_transaction():
            # On SQLite (no implicit BEGIN here) the statement would commit on its own.
            raise RuntimeError("Prepared statement run outside a transaction")
        dialect = conn.dialect
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None
        cursor = dbapi_conn.cursor()
        try:
            if many:
                cursor.executemany(self.sql, [self.bind(row) for row in rows])
                return []
            cursor.execute(self.sql, self.bind(rows[0]))
            if cursor.description is None:
                return []
            found = cursor.fetchall()
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_conn, cursor):
                # As SQLAlchemy does: the pool must not hand this connection out again.
                conn.invalidate(exc)
            raise
        finally:
            cursor.close()
        if not any(self.results):
            return [tuple(row) for row in found]
        return [
            tuple(v if p is None else p(v) for p, v in zip(self.results, row, strict=True))
            for row in found
        ]


# --- the claim/lease loop -------------------------------------------------------------------


def any_row(session: Session | Connection, column: ColumnElement[Any], *where: Any) -> bool:
    """Whether any row matches ``where``: one ``SELECT column … LIMIT 1``.

    A periodic job looks with it, in a read transaction, before it takes the write lock to
    claim or change anything (decision 0021): on SQLite every alert's commit waits for that
    lock, and most runs of a job have nothing to do."""
    return session.execute(select(column).where(*where).limit(1)).first() is not None


def pick_due(session: Session, stmt: Select[Any]) -> Select[Any]:
    """``stmt`` (a SELECT of due rows) made safe for several servers: on PostgreSQL each one
    skips the rows another is claiming right now (FOR UPDATE SKIP LOCKED). SQLite has a single
    writer, holding the write lock (``write_scope``)."""
    if dialect_name(session) == "postgresql":
        return stmt.with_for_update(skip_locked=True)
    return stmt


def claim_due(
    session: Session,
    table: Table,
    *,
    due: ColumnElement[bool],
    order_by: Sequence[Any],
    limit: int,
    claim: Mapping[str, Any],
    where: Sequence[ColumnElement[bool]] = (),
    returning: Sequence[Any] | None = None,
) -> list[Any]:
    """Claim up to ``limit`` rows of ``table`` matching ``due`` (and ``where``), in
    ``order_by`` order, by setting ``claim`` (a token, a lease…) on them; returns ``returning``
    (the id by default) of the rows this call claimed.

    ``due`` is tested twice: to pick, and again in the UPDATE, the compare-and-set that makes
    the claim exclusive when two servers pick the same row. ``due`` should include "claimed
    by someone whose lease expired", so that a server that died mid-run is taken over.
    """
    # On SQLite the claim is a write: it waits its turn with the process's other writers.
    queue_for_write_lock(session)
    pick = select(table.c.id).where(due, *where).order_by(*order_by).limit(limit)
    pick = pick_due(session, pick)
    stmt = (
        update(table)
        .where(table.c.id.in_(pick.scalar_subquery()), due)
        .values(**claim)
        .returning(*(returning if returning is not None else [table.c.id]))
    )
    return list(session.execute(stmt).all())


def release_claim(
    session: Session,
    table: Table,
    *,
    row_id: int,
    token: str,
    values: Mapping[str, Any],
    where: Sequence[ColumnElement[bool]] = (),
    token_column: str = "claim_token",  # noqa: S107 (a column name)
) -> bool:
    """Write ``values`` on a claimed row only if this claim (``token``) still holds it
    (compare-and-set); False when the lease was lost to another server."""
    res = session.execute(
        update(table)
        .where(table.c.id == row_id, table.c[token_column] == token, *where)
        .values(**values)
    )
    return bool(res.rowcount == 1)  # type: ignore[attr-defined]
