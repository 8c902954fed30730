"""An alert that cannot be escalated (no referent directory) is flagged once; the sweep's
retries leave it as it is without taking the write lock; once a directory is imported, the next
sweep escalates it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlmodel import select

from alert_server.alerts import service as alerts
from alert_server.alerts.models import Alert
from alert_server.db import make_engine, migrate, read_scope, write_scope
from alert_server.devices.presence import PresenceTracker
from alert_server.downlink import Downlink
from alert_server.pipeline import Pipeline
from alert_server.referents import service as referents
from vigie.timeutil import utcnow

DIRECTORY = """\
version: 1
departements: {}
national_fallback:
  - name: "Permanence nationale"
    phone: "+33612345678"
"""


class RecordingDispatcher:
    """Records what the pipeline hands to dispatch (the escalation itself is tested elsewhere)."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def start(self, session: Any, brief: Any, chains: Any, policy: Any, now: Any) -> None:
        self.started.append(brief.alert_id)

    def verify_first(self, session: Any, brief: Any, now: Any) -> None:
        pass

    def mark_duress(self, session: Any, alert_id: str, now: Any) -> None:
        pass


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    migrate(eng)
    yield eng
    eng.dispose()


def test_without_directory_flagged_once_then_escalated_after_import(
    engine: Engine, tmp_path: Path
) -> None:
    dispatcher = RecordingDispatcher()
    pipeline = Pipeline(
        engine,
        presence=PresenceTracker(engine),
        downlink=Downlink(lambda *a, **k: None),
        dispatcher=dispatcher,  # type: ignore[arg-type]
    )
    now = utcnow()
    with write_scope(engine) as session:
        alerts.store_alert(
            session,
            values={
                "alert_id": "a-1",
                "device_id": "nurse-1",
                "kind": "sos",
                "state": "open",
                "duress": False,
                "flags": [],
                "created_at": now,
                "raw": "{}",
            },
        )
    try:
        pipeline.process("a-1", now)
        with read_scope(engine) as session:
            alert = session.exec(select(Alert).where(Alert.alert_id == "a-1")).first()
            assert alert is not None and "no_directory" in alert.flags
            assert alert.dispatched_at is None

        writes: list[str] = []

        def on_sql(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if not statement.lstrip().upper().startswith(("SELECT", "PRAGMA")):
                writes.append(statement)

        event.listen(engine, "before_cursor_execute", on_sql)
        try:
            pipeline.process("a-1", now + timedelta(seconds=10))  # a sweep's retry
        finally:
            event.remove(engine, "before_cursor_execute", on_sql)
        assert [w for w in writes if w.strip().upper() not in ("BEGIN",)] == []
        assert dispatcher.started == []

        directory = tmp_path / "referents.yaml"
        directory.write_text(DIRECTORY, encoding="utf-8")
        referents.import_directory(engine, directory)
        pipeline.process("a-1", now + timedelta(seconds=20))
        assert dispatcher.started == ["a-1"]
        with read_scope(engine) as session:
            alert = session.exec(select(Alert).where(Alert.alert_id == "a-1")).first()
            assert alert is not None and alert.dispatched_at is not None
    finally:
        pipeline.shutdown()
