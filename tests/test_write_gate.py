"""SQLite's write lock as this process's threads queue for it (``vigie.persistence.WriteGate``):
first come, first served, handed over at once. SQLite's own busy handler sleeps 1, 2, 5 … 100 ms
between tries, so a writer that found the lock taken slept past its release, and a thread
writing again in between took it first (issue #18: the ingest writer behind dispatch's)."""

from __future__ import annotations

import collections
import gc
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from alert_server.db import database_unavailable
from tests.support import sqlite_engine as migrated_sqlite
from vigie.persistence import DatabaseBusy, WriteGate, take_write_lock, write_scope


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = migrated_sqlite(tmp_path)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE seen (who TEXT)"))
    try:
        yield engine
    finally:
        engine.dispose()


def _until(check: Callable[[], bool]) -> None:
    done = threading.Event()
    for _ in range(6000):  # a deadline, not a timing: 60 s
        if check():
            return
        done.wait(0.01)
    raise AssertionError("never happened")


def _writer(engine: Engine, who: str, order: list[str], hold: threading.Event | None = None):  # type: ignore[no-untyped-def]
    def run() -> None:
        with write_scope(engine) as s:
            order.append(who)
            s.execute(text("INSERT INTO seen VALUES (:w)"), {"w": who})
            if hold is not None:
                hold.wait(60)

    return threading.Thread(target=run, name=who, daemon=True)


def _holding(engine: Engine, order: list[str]) -> tuple[threading.Thread, threading.Event]:
    """Writer "a", started and holding the lock until the event returned is set."""
    hold = threading.Event()
    a = _writer(engine, "a", order, hold)
    a.start()
    _until(lambda: order == ["a"])
    return a, hold


def test_writers_get_the_lock_in_their_order_and_none_barges_in(sqlite_engine: Engine) -> None:
    gate = WriteGate.of(sqlite_engine)
    assert gate is not None
    order: list[str] = []
    a, release_a = _holding(sqlite_engine, order)
    b = _writer(sqlite_engine, "b", order)
    b.start()
    _until(lambda: gate.waiting == 1)
    # A session taking the lock with ``take_write_lock`` (dispatch) queues the same way.
    c_done = threading.Event()

    def c() -> None:
        from sqlmodel import Session

        with Session(sqlite_engine) as s:
            take_write_lock(s)
            order.append("c")
            s.execute(text("SELECT count(*) FROM seen"))
            s.execute(text("INSERT INTO seen VALUES ('c')"))
            s.commit()
        c_done.set()

    threading.Thread(target=c).start()
    _until(lambda: gate.waiting == 2)
    # "a" commits and at once writes again: it comes after the two already waiting.
    again = _writer(sqlite_engine, "a2", order)
    release_a.set()
    a.join()
    again.start()
    for t in (b, again):
        t.join(60)
    assert c_done.wait(60)
    assert order == ["a", "b", "c", "a2"]
    with sqlite_engine.connect() as conn:
        assert list(conn.execute(text("SELECT who FROM seen")).scalars()) == ["a", "b", "c", "a2"]


def test_a_writer_that_waits_too_long_is_told_the_database_is_locked(
    sqlite_engine: Engine,
) -> None:
    gate = WriteGate.of(sqlite_engine)
    assert gate is not None
    gate.timeout_s = 0.2
    order: list[str] = []
    a, hold = _holding(sqlite_engine, order)
    with pytest.raises(DatabaseBusy) as busy, write_scope(sqlite_engine):
        pass
    # The same retry as SQLite's own "database is locked" (ingest keeps the message).
    assert database_unavailable(busy.value)
    assert gate.waiting == 0
    hold.set()
    a.join()
    with write_scope(sqlite_engine) as s:  # and the lock is free again
        s.execute(text("INSERT INTO seen VALUES ('b')"))


def test_a_failed_or_lost_writer_gives_the_lock_back(sqlite_engine: Engine) -> None:
    gate = WriteGate.of(sqlite_engine)
    assert gate is not None
    gate.timeout_s = 5.0
    with pytest.raises(RuntimeError), write_scope(sqlite_engine) as s:
        s.execute(text("INSERT INTO seen VALUES ('x')"))
        raise RuntimeError("a bug")
    with write_scope(sqlite_engine) as s:  # rolled back: given back
        s.execute(text("INSERT INTO seen VALUES ('y')"))
    conn = sqlite_engine.connect()
    conn.execution_options(vigie_write_lock=True)
    conn.begin()
    conn.invalidate()  # the connection is dropped while it holds the lock
    with write_scope(sqlite_engine) as s:
        s.execute(text("INSERT INTO seen VALUES ('z')"))
    with sqlite_engine.connect() as c:
        assert list(c.execute(text("SELECT who FROM seen")).scalars()) == ["y", "z"]


def test_a_collection_inside_the_gate_does_not_stop_it(sqlite_engine: Engine) -> None:
    """The cycle collector may run at any allocation, also while the gate is changing hands,
    and finalise a connection someone forgot (in a reference cycle): the pool's rollback of it
    comes back into the gate on the same thread. That must not stop the gate (with a plain
    lock it waited on itself, and every writer after it waited forever)."""
    gate = WriteGate.of(sqlite_engine)
    assert gate is not None
    gc.disable()
    try:

        class Forgotten:
            pass

        leak = Forgotten()
        leak.self = leak  # type: ignore[attr-defined]
        leak.conn = sqlite_engine.connect()  # type: ignore[attr-defined]
        leak.conn.execute(text("SELECT 1"))  # type: ignore[attr-defined]
        del leak

        collected = threading.Event()

        class CollectingQueue(collections.deque):  # type: ignore[type-arg]
            def append(self, item: object) -> None:
                gc.collect()  # as an automatic collection may, here
                collected.set()
                super().append(item)

        gate._waiters = CollectingQueue()  # type: ignore[assignment]
        order: list[str] = []
        a, hold = _holding(sqlite_engine, order)
        b = _writer(sqlite_engine, "b", order)
        b.start()
        assert collected.wait(60), "the gate stopped: the collection waited on the gate"
        _until(lambda: gate.waiting == 1)
        hold.set()
        a.join(60)
        b.join(60)
        assert not b.is_alive(), "the gate stopped"
        assert order == ["a", "b"]
    finally:
        gc.enable()


def test_a_claim_waits_its_turn_with_the_other_writers(sqlite_engine: Engine) -> None:
    """Dispatch's claim of due sends (``claim_due``) writes too: it queues at the gate, in
    order, rather than on SQLite's busy handler, where the other writers kept barging in."""
    from sqlalchemy import Column, Integer, MetaData, String, Table
    from sqlmodel import Session

    from vigie.persistence import claim_due

    jobs = Table(
        "jobs", MetaData(), Column("id", Integer, primary_key=True), Column("status", String)
    )
    with sqlite_engine.begin() as conn:
        jobs.create(conn)
        conn.execute(jobs.insert(), [{"status": "due"}, {"status": "due"}])
    gate = WriteGate.of(sqlite_engine)
    assert gate is not None
    order: list[str] = []
    a, hold = _holding(sqlite_engine, order)
    claimed: list[object] = []

    def claim() -> None:
        with Session(sqlite_engine) as s:
            rows = claim_due(
                s, jobs, due=jobs.c.status == "due", order_by=[jobs.c.id], limit=10,
                claim={"status": "claimed"},
            )  # fmt: skip
            s.commit()
        claimed.extend(rows)

    claimer = threading.Thread(target=claim, daemon=True)
    claimer.start()
    _until(lambda: gate.waiting == 1)  # in the queue, not on SQLite's busy handler
    hold.set()
    a.join(60)
    claimer.join(60)
    assert len(claimed) == 2
