"""Finding a device's running incident reads that incident, not the device's whole history.

Every press the ingest writer stores asks ``incident_primary`` for its device's running
incident. It used to be answered through the index on ``device_id`` alone: every alert the
device ever sent was read, so a nurse pressing again and again (a flood, protocol.md 1.1)
made each of her next presses slower than the last. The partial index
``ix_alert_incident_head`` (first alerts only, by device, kind and last press) answers it
directly; the query plan must use it, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert
from sqlmodel import Session

from alert_server.alerts.models import Alert
from alert_server.alerts.service import incident_primary
from vigie.persistence import _Form
from vigie.vocabulary import AlertState

T0 = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)
FLOOD = 400


def _row(alert_id: str, device_id: str, at: datetime, **more: Any) -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "device_id": device_id,
        "device_alert_id": alert_id,
        "kind": "sos",
        "state": AlertState.OPEN,
        "duress": False,
        "flags": [],
        "presses": 1,
        "created_at": at,
        "last_press_at": at,
        "raw": "{}",
        **more,
    }


def _fill(engine: Engine) -> None:
    rows = [
        # An earlier incident of the same nurse, resolved: it must not be taken up again.
        _row("old", "nurse-flood", T0 - timedelta(minutes=3), state=AlertState.RESOLVED),
        _row("head", "nurse-flood", T0, presses=FLOOD, last_press_at=T0 + timedelta(seconds=FLOOD)),
    ]
    rows += [
        _row(f"press-{i}", "nurse-flood", T0 + timedelta(seconds=i), incident_of="head")
        for i in range(1, FLOOD)
    ]
    rows += [_row(f"other-{i}", f"nurse-{i}", T0) for i in range(300)]
    with engine.begin() as conn:
        conn.execute(insert(Alert.__table__), rows)  # type: ignore[attr-defined]
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE alert")


def _lookup_and_plan(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> tuple[str | None, str]:
    """The running incident found for the flooding nurse, and the plan of the very statement
    (and parameters) ``incident_primary`` sent to the driver (it runs on the driver's cursor,
    ``Prepared``, so SQLAlchemy's execution events do not see it)."""
    sent: list[tuple[str, Any]] = []
    run = _Form.run

    def capture(form: _Form, conn: Any, rows: Any, *, many: bool) -> Any:
        if "incident_of IS NULL" in form.sql:
            sent.append((form.sql, form.bind(rows[0])))
        return run(form, conn, rows, many=many)

    monkeypatch.setattr(_Form, "run", capture)
    with Session(engine) as session:
        head = incident_primary(
            session, device_id="nurse-flood", kind="sos", since=T0 - timedelta(minutes=10)
        )
        found = head.alert_id if head is not None else None
    monkeypatch.undo()
    assert len(sent) == 1
    statement, params = sent[0]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # On a table this small the planner may rightly prefer reading it all; what is
            # checked is which index it takes when it takes one.
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            lines = conn.exec_driver_sql("EXPLAIN " + statement, params).scalars().all()
        else:
            lines = [r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)]
    return found, "\n".join(str(line) for line in lines)


def test_a_press_finds_its_running_incident_through_the_incident_index(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(engine)
    found, plan = _lookup_and_plan(engine, monkeypatch)
    assert found == "head"
    assert "ix_alert_incident_head" in plan, plan
