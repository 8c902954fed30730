"""``Prepared``: the statements every press runs, on the driver's cursor.

They must behave as SQLAlchemy's own execution would (same rows, same types, same defaults),
inside the caller's transaction, and a lost PostgreSQL connection must not go back to the pool.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import Engine, bindparam, event, select, text

from alert_server.alerts.models import Alert
from alert_server.db import database_unavailable
from vigie.persistence import Prepared, insert_ignore_statement, write_transaction

T0 = datetime(2026, 12, 4, 3, 0, 1, 250_000, tzinfo=UTC)
_alert_t = Alert.__table__  # type: ignore[attr-defined]
INSERT = Prepared(build=lambda dialect: insert_ignore_statement(dialect, _alert_t))
HEAD_CORE = (
    select(
        _alert_t.c.id,
        _alert_t.c.state,
        _alert_t.c.duress,
        _alert_t.c.presses,
        _alert_t.c.last_press_at,
        _alert_t.c.flags,
    )
    .where(_alert_t.c.device_id == bindparam("device_id"))
    .order_by(_alert_t.c.id)
    .limit(1)
)
HEAD = Prepared(HEAD_CORE)


def _values(alert_id: str, **more: object) -> dict[str, object]:
    # No state, presses or duress: their Python-side defaults are filled as SQLAlchemy does.
    return {
        "alert_id": alert_id,
        "device_id": "nurse-1",
        "device_alert_id": alert_id,
        "kind": "sos",
        "flags": ["merged", "duress_pin"],
        "created_at": T0,
        "last_press_at": T0,
        "raw": "{}",
        **more,
    }


def test_rows_types_and_defaults_are_those_of_sqlalchemy(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        assert len(INSERT.rows(conn, _values("a-1"))) == 1
        # ON CONFLICT DO NOTHING: a repeat returns no row.
        assert INSERT.rows(conn, _values("a-1")) == []
        prepared = HEAD.first(conn, {"device_id": "nurse-1"})
        core = conn.execute(HEAD_CORE, {"device_id": "nurse-1"}).first()
        assert HEAD.first(conn, {"device_id": "nobody"}) is None
    assert prepared is not None and core is not None
    assert prepared == tuple(core)
    _id, state, duress, presses, last_press_at, flags = prepared
    assert (state, duress, presses, flags) == ("open", False, 1, ["merged", "duress_pin"])
    assert duress is False  # a bool, not SQLite's 0
    assert last_press_at == T0 and last_press_at.tzinfo is not None


def test_every_parameter_given_in_any_order(engine: Engine) -> None:
    """The presses' own case (no default to fill): the parameters read at once, only those
    with a type processor converted, whatever the order of the caller's keys."""
    given = _values("c-1", state="acknowledged", presses=3, duress=True, batt=41, pos_lat=43.5)
    given["device_ts"] = T0 - timedelta(minutes=3)
    reordered = dict(reversed(list({**given, "alert_id": "c-2", "device_alert_id": "c-2"}.items())))
    columns = [_alert_t.c[k] for k in ("state", "presses", "duress", "batt", "pos_lat", "flags")]
    columns += [_alert_t.c.device_ts, _alert_t.c.last_press_at]
    with write_transaction(engine) as conn:
        assert len(INSERT.rows(conn, given)) == 1
        assert len(INSERT.rows(conn, reordered)) == 1
        rows = conn.execute(select(*columns).order_by(_alert_t.c.alert_id)).all()
    expected = ("acknowledged", 3, True, 41, 43.5, ["merged", "duress_pin"])
    assert [tuple(r) for r in rows] == [(*expected, T0 - timedelta(minutes=3), T0)] * 2


def test_it_joins_the_callers_transaction(engine: Engine) -> None:
    with pytest.raises(RuntimeError, match="undone"), write_transaction(engine) as conn:
        INSERT.rows(conn, _values("a-2"))
        raise RuntimeError("undone")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alert")).scalar() == 0


def test_it_refuses_to_run_outside_a_transaction(engine: Engine) -> None:
    # On SQLite the statement would otherwise commit on its own, outside any rollback.
    with engine.connect() as conn, pytest.raises(RuntimeError, match="outside a transaction"):
        INSERT.rows(conn, _values("a-3"))


def test_several_rows_at_once(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        for i in range(3):
            INSERT.rows(conn, _values(f"b-{i}", last_press_at=T0 + timedelta(seconds=i)))
        Prepared(
            _alert_t.update()
            .where(_alert_t.c.alert_id == bindparam("a"))
            .values(presses=_alert_t.c.presses + 1)
        ).many(conn, [{"a": "b-0"}, {"a": "b-2"}, {"a": "b-2"}])
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT alert_id, presses FROM alert ORDER BY alert_id")).all()
    assert [tuple(r) for r in rows] == [("b-0", 2), ("b-1", 1), ("b-2", 3)]


def test_an_expanding_list_is_refused_when_compiled() -> None:
    from sqlalchemy.dialects import sqlite

    stmt = Prepared(select(_alert_t.c.id).where(_alert_t.c.state.in_(["open", "acknowledged"])))
    with pytest.raises(ValueError, match="not suited"):
        stmt.form(sqlite.dialect(), [])


@pytest.mark.postgres
def test_a_lost_connection_is_invalidated_and_the_next_transaction_works(
    pg_database: str,
) -> None:
    from vigie.persistence import make_engine

    engine = make_engine(pg_database)
    try:
        from alert_server.db import migrate

        migrate(engine)
        invalidated: list[BaseException | None] = []
        event.listen(engine, "invalidate", lambda _c, _r, exc: invalidated.append(exc))
        admin = pg_database.replace("+psycopg", "")
        with pytest.raises(psycopg.OperationalError) as lost, write_transaction(engine) as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with psycopg.connect(admin, autocommit=True) as killer:
                killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
            INSERT.rows(conn, _values("c-1"))
        assert database_unavailable(lost.value)
        # Invalidated as SQLAlchemy would, by the error itself.
        assert invalidated == [lost.value]
        # The pool did not keep the dead connection: the writer's retry goes through.
        with write_transaction(engine) as conn:
            assert len(INSERT.rows(conn, _values("c-1"))) == 1
    finally:
        engine.dispose()


def test_a_missing_parameter_is_named(engine: Engine) -> None:
    with write_transaction(engine) as conn, pytest.raises(ValueError, match="'device_id' missing"):
        HEAD.first(conn, {"device": "nurse-1"})
