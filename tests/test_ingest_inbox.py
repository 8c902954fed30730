"""A press is answered once its bytes are committed to the inbox, and stored just after
(alert_server/ingest/inbox.py): nothing is lost between the two, nothing is stored twice."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import Engine, event, select, text
from sqlmodel import col

from alert_server.alerts.models import Alert
from alert_server.ingest import handler, inbox
from tests.support import wait_until
from tests.writer_support import alert_item, in_process_writer, writer_sleeps
from vigie.timeutil import as_utc, utcnow


class Crash(BaseException):
    """The server dies here (nothing of the writer's catches it)."""


def _count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def _stored(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(conn.execute(text("SELECT device_alert_id FROM alert")).scalars())


def _events(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(conn.execute(text("SELECT type FROM alert_event")).scalars())


def _alert_id(item: handler.Inbound) -> str:
    return str(json.loads(item.payload)["alert_id"])


def test_a_press_is_answered_once_kept_then_stored_in_the_next_transaction(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the device hears ``alert.received`` and the broker gets its PUBACK, the message
    is committed (another connection sees it in the inbox); the alert row follows, and the
    inbox row goes with it."""
    seen_at_receipt: list[tuple[int, int]] = []
    seen_at_ack: list[tuple[int, int]] = []

    def look() -> tuple[int, int]:
        return (
            _count(engine, "SELECT count(*) FROM alert_inbox"),
            _count(engine, "SELECT count(*) FROM alert"),
        )

    with in_process_writer(engine) as writer:
        real_alert = writer.ingestor.downlink.alert

        def alert(ref, type_, **fields):
            seen_at_receipt.append(look())
            real_alert(ref, type_, **fields)

        monkeypatch.setattr(writer.ingestor.downlink, "alert", alert)
        item = alert_item("nurse-1", lambda _a: seen_at_ack.append(look()))
        writer.ingestor._commit_with_retry([item])
        assert writer.sent == ["vigie/v1/dev/nurse-1/cmd"]
    assert seen_at_receipt == [(1, 0)] and seen_at_ack == [(1, 0)]
    assert _count(engine, "SELECT count(*) FROM alert_inbox") == 0
    assert _stored(engine) == Counter([_alert_id(item)])


def test_a_flood_batch_is_stored_and_answered_in_one_transaction(engine: Engine) -> None:
    """More than ``INBOX_MAX`` alerts at once: no inbox row (two transactions per batch
    would cost a flood its throughput), every alert stored and receipted once."""
    inserts: list[str] = []

    def watch(conn, cursor, statement, *args):
        if "alert_inbox" in statement:
            inserts.append(statement)

    event.listen(engine, "before_cursor_execute", watch)
    acks: Counter[str] = Counter()
    with in_process_writer(engine) as writer:
        items = [alert_item(f"nurse-{i}", lambda a: acks.update([a])) for i in range(10)]
        assert len(items) > handler.INBOX_MAX
        writer.ingestor._commit_with_retry(items)
        assert len(writer.sent) == 10
    # ``Prepared`` statements bypass the events: the table itself says it was never used.
    assert inserts == []
    assert _count(engine, "SELECT count(*) FROM alert_inbox") == 0
    assert _count(engine, "SELECT coalesce(max(id), 0) FROM alert_inbox") == 0
    assert acks == Counter(_alert_id(i) for i in items) == _stored(engine)


def test_a_crash_between_kept_and_stored_loses_nothing_and_stores_it_first(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server dies after the receipt and the PUBACK, before the alert is stored: the next
    writer stores it at its start, once, hands it on to be escalated, and only then takes new
    messages (a cancel that follows must find its alert)."""
    pressed = alert_item("nurse-1")
    with in_process_writer(engine) as writer:

        def crash(batch: list[handler.Inbound]) -> None:
            raise Crash

        monkeypatch.setattr(writer.ingestor, "_store", crash)
        with pytest.raises(Crash):
            writer.ingestor._commit_with_retry([pressed])
        assert writer.sent == ["vigie/v1/dev/nurse-1/cmd"]  # told: it must not be lost
        monkeypatch.undo()
    assert _count(engine, "SELECT count(*) FROM alert_inbox") == 1
    assert _stored(engine) == Counter()

    later = alert_item("nurse-2")
    with in_process_writer(engine) as writer:
        handed_over: list[str] = []
        monkeypatch.setattr(writer.ingestor.pipeline, "alert_stored", handed_over.append)
        writer.ingestor.submit(later)  # waiting before the writer starts
        writer.ingestor.start()
        wait_until(lambda: len(handed_over) == 2, 30, "both alerts stored")
        registry = writer.ingestor.metrics.registry
        assert registry.get_sample_value("vigie_ingest_inbox_recovered_total") == 1
    with engine.connect() as conn:
        order = list(conn.execute(text("SELECT device_alert_id FROM alert ORDER BY id")).scalars())
    assert order == [_alert_id(pressed), _alert_id(later)]
    assert handed_over == order
    assert _count(engine, "SELECT count(*) FROM alert_inbox") == 0
    assert _events(engine) == Counter({"received": 2})


def test_a_dead_writers_rows_are_stored_by_another_the_live_ones_left_to_theirs(
    engine: Engine,
) -> None:
    """A server gone for good left rows in the inbox: any other writer's sweep stores those
    older than ``ORPHAN_AFTER``; a row just kept by a live writer is left to it."""
    old = alert_item("nurse-1")
    fresh = alert_item("nurse-2")
    now = utcnow()
    with engine.begin() as conn:
        old_id = inbox.add(conn, old.device_id, old.payload, now - timedelta(minutes=5))
        inbox.add(conn, fresh.device_id, fresh.payload, now)
    with in_process_writer(engine) as writer:
        writer.ingestor._store_orphans(before=now - inbox.ORPHAN_AFTER)
        # No receipt from the sweep: the dead writer had sent it, or the device sends again.
        assert writer.sent == []
    assert _stored(engine) == Counter([_alert_id(old)])
    with engine.connect() as conn:
        left = list(conn.execute(text("SELECT id FROM alert_inbox")).scalars())
        created = conn.execute(select(col(Alert.created_at))).scalar_one()
    assert old_id not in left and len(left) == 1
    # Stored at its arrival time, not at the sweep's.
    assert abs(as_utc(created) - (now - timedelta(minutes=5))) < timedelta(seconds=1)


def test_a_row_another_writer_stored_is_not_stored_again(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slow owner of a row a sweep already stored: it stores nothing (no second alert, no
    ``repeat`` event, no second hand-over to the escalation), and tells no one again."""
    writer_sleeps(monkeypatch)
    item = alert_item("nurse-1")
    with engine.begin() as conn:
        inbox_id = inbox.add(conn, item.device_id, item.payload, item.received_at)
    with in_process_writer(engine) as sweeper:
        sweeper.ingestor._store_orphans(before=None)
    with in_process_writer(engine) as owner:
        handed_over: list[str] = []
        monkeypatch.setattr(owner.ingestor.pipeline, "alert_stored", handed_over.append)
        item.inbox_id, item.token = inbox_id, None  # kept and answered by this owner
        owner.ingestor._commit_with_retry([item])
        assert owner.sent == [] and handed_over == []
    assert _stored(engine) == Counter([_alert_id(item)])
    assert _events(engine) == Counter({"received": 1})


def test_two_writers_sweeping_the_same_rows_store_each_once(engine: Engine) -> None:
    """Two servers' writers (two engines: two processes' pools) store the same orphans at
    the same time: each alert once, one ``received`` event each, no ``repeat``."""
    items = [alert_item(f"nurse-{i % 7}") for i in range(60)]
    with engine.begin() as conn:
        for item in items:
            inbox.add(conn, item.device_id, item.payload, item.received_at)
    from alert_server.db import make_engine

    other = make_engine(engine.url.render_as_string(hide_password=False))
    try:
        with in_process_writer(engine) as one, in_process_writer(other) as two:
            go = threading.Barrier(2)

            def sweep(writer):
                go.wait()
                writer.ingestor._store_orphans(before=None)

            threads = [threading.Thread(target=sweep, args=(w,)) for w in (one, two)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert not any(t.is_alive() for t in threads)
            recovered = [
                w.ingestor.metrics.registry.get_sample_value("vigie_ingest_inbox_recovered_total")
                for w in (one, two)
            ]
    finally:
        other.dispose()
    assert sum(recovered) == 60  # type: ignore[arg-type]
    assert _stored(engine) == Counter(_alert_id(i) for i in items)
    events = _events(engine)
    assert events["received"] == 60 and events["repeat"] == 0
    assert _count(engine, "SELECT count(*) FROM alert_inbox") == 0


def test_the_running_writer_sweeps_for_orphans(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep runs while the writer waits for messages, not only at its start."""
    monkeypatch.setattr(handler, "SWEEP_EVERY_S", 0.1)
    with in_process_writer(engine) as writer:
        writer.ingestor.start()
        item = alert_item("nurse-1")
        with engine.begin() as conn:
            inbox.add(conn, item.device_id, item.payload, utcnow() - timedelta(minutes=5))
        wait_until(lambda: _stored(engine) == Counter([_alert_id(item)]), 30, "the orphan stored")
    assert _count(engine, "SELECT count(*) FROM alert_inbox") == 0


def test_an_alert_whose_storing_keeps_failing_is_kept_minimal_and_told_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The full path fails on this alert every time (a bug): it is stored with its raw bytes,
    flagged, its inbox row gone with it, and its device had one receipt, when it was kept."""
    writer_sleeps(monkeypatch)
    acks: Counter[str] = Counter()
    with in_process_writer(engine) as writer:

        def always_fails(session, **kw):
            raise RuntimeError("a bug")

        monkeypatch.setattr(writer.ingestor.pipeline, "store_alert", always_fails)
        item = alert_item("nurse-1", lambda a: acks.update([a]))
        writer.ingestor._commit_with_retry([item])
        assert writer.sent == ["vigie/v1/dev/nurse-1/cmd"]
    assert acks == Counter([_alert_id(item)])
    assert _stored(engine) == Counter([_alert_id(item)])
    with engine.connect() as conn:
        flags = conn.execute(text("SELECT flags FROM alert")).scalar_one()
    assert "ingest_error" in (flags if isinstance(flags, list) else json.loads(flags))
    assert _count(engine, "SELECT count(*) FROM alert_inbox") == 0


def test_a_gateways_alert_is_answered_once_its_alert_is_stored(engine: Engine) -> None:
    """A gateway (OsmAnd, buttons) answers its client once the alert row is committed, as its
    clients and their checks expect: its alerts never take the inbox's early answer."""
    seen_at_answer: list[Counter[str]] = []
    with in_process_writer(engine) as writer:
        item = alert_item("osmand-1", lambda _a: seen_at_answer.append(_stored(engine)))
        item.from_broker = False
        writer.ingestor._commit_with_retry([item])
    assert seen_at_answer == [Counter([_alert_id(item)])]
    assert _count(engine, "SELECT coalesce(max(id), 0) FROM alert_inbox") == 0
