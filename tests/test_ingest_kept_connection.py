"""The ingest writer keeps one connection for its batches of alerts (``KeptConnection``), and
gives it up at the first failure: a connection the database dropped, or a bug, never costs
an alert."""

from __future__ import annotations

import json
from collections import Counter

import psycopg
import pytest
from sqlalchemy import Engine, event, text

from tests.writer_support import alert_item, in_process_writer, writer_sleeps


def _stored(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(conn.execute(text("SELECT device_alert_id FROM alert")).scalars())


def test_the_writer_keeps_one_connection_for_its_alerts(engine: Engine) -> None:
    checkouts: list[object] = []
    event.listen(engine, "checkout", lambda *a: checkouts.append(a))
    acks: Counter[str] = Counter()
    with in_process_writer(engine) as writer:
        items = [alert_item(f"nurse-{i}", lambda a: acks.update([a])) for i in range(5)]
        for item in items:
            writer.ingestor._commit_with_retry([item])
        assert writer.ingestor._kept.connects == 1
    # One checkout for the five batches (each took its own before).
    assert len(checkouts) == 1
    ids = [json.loads(i.payload)["alert_id"] for i in items]
    assert acks == Counter(ids) and _stored(engine) == Counter(ids)


@pytest.mark.postgres
def test_a_kept_connection_the_database_dropped_costs_no_alert_and_no_wait(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL restarted (here: the writer's backend terminated) while the writer was idle:
    the next alert fails on the dead connection, is stored on a new one at once (no back-off
    sleep), acknowledged once."""
    from alert_server.db import make_engine, migrate

    engine = make_engine(pg_database)
    migrate(engine)
    sleeps = writer_sleeps(monkeypatch)
    acks: Counter[str] = Counter()
    try:
        with in_process_writer(engine) as writer:
            kept = writer.ingestor._kept
            writer.ingestor._commit_with_retry([alert_item("nurse-1", lambda a: acks.update([a]))])
            assert kept._conn is not None
            pid = kept._conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
            with psycopg.connect(pg_database.replace("+psycopg", ""), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            second = alert_item("nurse-2", lambda a: acks.update([a]))
            writer.ingestor._commit_with_retry([second])
            assert kept.connects == 2
        assert sleeps == []
        assert sorted(acks.values()) == [1, 1]
        assert _stored(engine)[json.loads(second.payload)["alert_id"]] == 1
    finally:
        engine.dispose()


def test_after_a_failed_batch_the_writer_starts_again_on_a_new_connection(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any failure (here a bug while storing): the transaction is undone, the connection is
    given up, and the alert is stored on the retry, once."""
    writer_sleeps(monkeypatch)
    acks: Counter[str] = Counter()
    with in_process_writer(engine) as writer:
        pipeline = writer.ingestor.pipeline
        real = pipeline.store_alert
        failures = [RuntimeError("a bug")]

        def store_once_failing(session, **kw):  # type: ignore[no-untyped-def]
            stored = real(session, **kw)  # the first time: written, then undone by the failure
            if failures:
                raise failures.pop()
            return stored

        handed_over: list[str] = []
        monkeypatch.setattr(pipeline, "store_alert", store_once_failing)
        monkeypatch.setattr(pipeline, "alert_stored", handed_over.append)
        item = alert_item("nurse-1", lambda a: acks.update([a]))
        writer.ingestor._commit_with_retry([item])
        assert writer.ingestor._kept.connects == 2
    alert_id = json.loads(item.payload)["alert_id"]
    assert acks == Counter([alert_id]) and _stored(engine) == Counter([alert_id])
    # Stored as new on the retry, so it goes on to be escalated, once.
    assert len(handed_over) == 1


def test_an_attempt_undone_counts_no_alert(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch undone by its second alert's failure: the first alert is counted once, when the
    retry commits it, not also for the attempt that was rolled back."""
    writer_sleeps(monkeypatch)
    with in_process_writer(engine) as writer:
        pipeline = writer.ingestor.pipeline
        real = pipeline.store_alert
        failures = [RuntimeError("a bug")]

        def second_fails_once(session, **kw):  # type: ignore[no-untyped-def]
            if kw["draft"].device_id == "nurse-2" and failures:
                raise failures.pop()
            return real(session, **kw)

        monkeypatch.setattr(pipeline, "store_alert", second_fails_once)
        writer.ingestor._commit_with_retry([alert_item("nurse-1"), alert_item("nurse-2")])
        registry = writer.ingestor.metrics.registry
        assert registry.get_sample_value("vigie_alerts_stored_total") == 2
        assert registry.get_sample_value("vigie_alerts_flagged_total", {"flag": "delayed"}) == 2
    assert sum(_stored(engine).values()) == 2
