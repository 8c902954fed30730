"""SQLite's write-ahead log is copied into the database by the server's own thread
(``vigie.persistence.WalCheckpointer``), not by whichever commit takes it past 1,000 pages: that
commit used to copy and sync the log before returning, and every sixtieth alert's receipt waited
5-7 ms for it (issue #18). The same thread starts the log again once it is all copied: the commit
that does it writes the log's header and syncs it, and with alerts minutes apart that was every
alert's commit."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from tests.support import built_runtime
from vigie.persistence import (
    WAL_BACKSTOP_PAGES,
    WalCheckpointer,
    WriteGate,
    make_engine,
    write_scope,
)

PAGE = 4096


def _until(check: Callable[[], bool], what: str) -> None:
    done = threading.Event()
    for _ in range(6000):  # a deadline, not a timing: 60 s
        if check():
            return
        done.wait(0.01)
    raise AssertionError(f"never happened: {what}")


def _write_pages(engine: Engine, pages: int) -> None:
    """``pages`` pages of new rows, five pages per commit, as the writer's commits are many."""
    for _ in range(pages // 5):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO blobs (body) VALUES (:b)"), {"b": b"x" * (5 * PAGE)})


def _log_salts(db: Path) -> bytes:
    """The salts in the log's header: every start of the log from its beginning changes them
    (sqlite.org/walformat.html), and only such a start writes the header and syncs it."""
    with open(f"{db}-wal", "rb") as log:
        return log.read(32)[16:24]


def _all_copied(checkpointer: WalCheckpointer, pages: int) -> Callable[[], bool]:
    """Its last checkpoint found at least ``pages`` pages in the log and copied all of them."""

    def check() -> bool:
        last = checkpointer.last
        return last is not None and last[0] >= pages and last[1] == last[0]

    return check


def _engine(path: Path, **kwargs: bool) -> Engine:
    engine = make_engine(f"sqlite:///{path}", **kwargs)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB)"))
    return engine


def test_commits_leave_the_log_to_the_checkpointer(tmp_path: Path) -> None:
    db = tmp_path / "vigie.db"
    engine = _engine(db, checkpoints_elsewhere=True)
    checkpointer = WalCheckpointer(engine, interval_s=0.05)
    try:
        size_before = db.stat().st_size
        # Past SQLite's default of 1,000 pages: a commit would have copied the log itself.
        _write_pages(engine, 1500)
        assert db.stat().st_size == size_before, "a commit copied the log into the database"
        checkpointer.start()
        _until(_all_copied(checkpointer, 1500), "the log copied")
        assert db.stat().st_size >= size_before + 1500 * PAGE
        # All of it copied: the log starts again from its beginning (the thread restarts it).
        log_size = (tmp_path / "vigie.db-wal").stat().st_size
        _write_pages(engine, 100)
        assert (tmp_path / "vigie.db-wal").stat().st_size == log_size
    finally:
        checkpointer.stop()
        engine.dispose()
    assert checkpointer.failures == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == 320


def test_without_the_checkpointer_commits_copy_the_log_themselves(tmp_path: Path) -> None:
    """The same writes on a plain engine (the command line's): SQLite's own checkpoint."""
    db = tmp_path / "vigie.db"
    engine = _engine(db)
    try:
        size_before = db.stat().st_size
        _write_pages(engine, 1500)
        assert db.stat().st_size > size_before
    finally:
        engine.dispose()


def test_the_writers_checkpoint_still_bounds_the_log(tmp_path: Path) -> None:
    """With the checkpointer stopped or failing, the log does not grow without end."""
    engine = _engine(tmp_path / "vigie.db", checkpoints_elsewhere=True)
    try:
        with engine.connect() as conn:
            pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
        assert pages == WAL_BACKSTOP_PAGES
    finally:
        engine.dispose()


def test_a_failed_checkpoint_is_counted_and_logged_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = _engine(tmp_path / "vigie.db", checkpoints_elsewhere=True)
    checkpointer = WalCheckpointer(engine)
    conn = sqlite3.connect(tmp_path / "vigie.db")
    conn.close()  # every statement on it now fails
    try:
        with caplog.at_level(logging.WARNING, logger="vigie.persistence"):
            assert checkpointer.checkpoint(conn) is None
            assert checkpointer.checkpoint(conn) is None
            # A whole round of the thread on it: nothing raised (the thread goes on), the
            # checkpoint tried and counted, the version it had copied kept.
            assert checkpointer.round(conn, 7) == 7
    finally:
        engine.dispose()
    assert checkpointer.failures == 3
    warnings = [r for r in caplog.records if "log not copied" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize("url", ["sqlite://", "postgresql+psycopg://127.0.0.1:1/none"])
def test_nothing_to_copy_without_a_log_file(url: str) -> None:
    engine = create_engine(url)
    checkpointer = WalCheckpointer(engine)
    checkpointer.start()
    checkpointer.stop()
    assert checkpointer._thread is None
    engine.dispose()


def test_the_server_copies_the_log_on_its_own_thread(tmp_path: Path) -> None:
    with built_runtime(tmp_path) as runtime:
        assert runtime.checkpointer is not None
        with runtime.engine.connect() as conn:
            pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
        assert pages == WAL_BACKSTOP_PAGES


def test_a_commit_after_a_checkpoint_only_appends_to_the_log(tmp_path: Path) -> None:
    db = tmp_path / "vigie.db"
    engine = _engine(db, checkpoints_elsewhere=True)
    checkpointer = WalCheckpointer(engine, interval_s=0.05)
    try:
        _write_pages(engine, 50)
        checkpointer.start()
        _until(_all_copied(checkpointer, 50), "the log copied")
        checkpointer.stop()  # after the round that copied it
        salts = _log_salts(db)
        # The alert after a quiet spell: its commit appends, and syncs nothing.
        _write_pages(engine, 5)
        assert _log_salts(db) == salts, "the commit started the log again (and synced it)"
        assert checkpointer.restarts == 1
    finally:
        checkpointer.stop()
        engine.dispose()
    assert checkpointer.failures == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == 11


def test_a_quiet_database_is_left_alone(tmp_path: Path) -> None:
    """Nothing committed since its last checkpoint: the thread neither copies nor restarts
    (copying the page of its own restart would make the next commit restart the log)."""
    db = tmp_path / "vigie.db"
    engine = _engine(db, checkpoints_elsewhere=True)
    checkpointer = WalCheckpointer(engine, interval_s=0.02)
    try:
        _write_pages(engine, 10)
        checkpointer.start()
        _until(lambda: checkpointer.restarts >= 1, "the log started again by the checkpointer")
        salts, last = _log_salts(db), checkpointer.last
        threading.Event().wait(0.5)  # 25 of its rounds with nothing committed
        assert (checkpointer.restarts, checkpointer.last, _log_salts(db)) == (1, last, salts)
        # A commit: copied, and the log started again, once.
        _write_pages(engine, 5)
        _until(lambda: checkpointer.restarts == 2, "the new commit copied")
        threading.Event().wait(0.5)
        assert checkpointer.restarts == 2
    finally:
        checkpointer.stop()
        engine.dispose()


def test_the_restart_never_waits_for_a_writer(tmp_path: Path) -> None:
    """A writer holding the write lock (or waiting for it) goes first: the restart is left
    to it, and the thread does not queue behind it."""
    db = tmp_path / "vigie.db"
    engine = _engine(db, checkpoints_elsewhere=True)
    checkpointer = WalCheckpointer(engine)
    conn = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        with write_scope(engine) as session:
            session.execute(text("INSERT INTO blobs (body) VALUES (x'00')"))
            assert checkpointer.restart_log(conn) is False
        assert checkpointer.restart_log(conn) is True
        gate = WriteGate.of(engine)
        assert gate is not None and gate.try_acquire(conn)  # given back after the restart
        gate.release(conn)
        # Another process writing: SQLite's lock is taken, and the thread does not wait.
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        assert checkpointer.restart_log(conn) is False
        other.execute("ROLLBACK")
        other.close()
    finally:
        conn.close()
        engine.dispose()
    assert checkpointer.restarts == 1


def test_the_write_gate_is_taken_at_once_or_not_at_all() -> None:
    gate = WriteGate(timeout_s=1.0)
    first, second = object(), object()
    assert gate.try_acquire(first)
    assert gate.try_acquire(first)  # already its own
    assert not gate.try_acquire(second)
    gate.release(first)
    assert gate.try_acquire(second)
    gate.release(second)
