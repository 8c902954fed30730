"""Timed visits: warning at the expected end, alert after the grace time, exactly once;
extend / check-in / end cancel the timers; offline during a visit; several servers.

Controlled time: every tick gets its ``now``; no sleeps. SQLite and PostgreSQL (``engine``).
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import Engine

from alert_server.db import write_scope
from alert_server.sessions import service as visits
from alert_server.sessions.engine import OFFLINE_KIND, OVERDUE_KIND
from alert_server.sessions.models import ACTIVE, ALERTED, ENDED, WARNED
from alert_server.sessions.service import server_expected_end, session_alert_id
from tests.sessions.helpers import (
    EXTEND_S,
    GRACE_S,
    MEMO,
    OFFLINE_S,
    POS,
    T0,
    Recorder,
    add_device,
    alerts_of,
    at,
    make_engine,
    send,
    session_msg,
    session_row,
    set_presence,
)
from tests.support import done_while_write_locked, sqlite_engine

END_S = 45 * 60  # a 45-minute visit


def start(engine: Engine, session_id: str = "s-1", device_id: str = "nurse-1") -> None:
    send(
        engine,
        session_msg("start", session_id, expected_end=at(END_S), memo=MEMO, pos=POS),
        T0,
        device_id,
    )


def test_overdue_session_warns_then_raises_one_alert(engine: Engine) -> None:
    add_device(engine)
    rec = Recorder()
    eng = make_engine(engine, rec)
    start(engine)
    assert eng.tick(at(END_S - 1)).warned == []
    assert rec.published == []

    report = eng.tick(at(END_S))
    assert report.warned == ["s-1"]
    [(topic, warning)] = rec.published
    assert topic == "vigie/v1/dev/nurse-1/cmd"
    assert warning["type"] == "session.warning" and warning["session_id"] == "s-1"
    assert warning["grace_s"] == GRACE_S
    assert session_row(engine).state == WARNED

    # Inside the grace time: nothing more, however often the clock ticks.
    for s in (1, 60, GRACE_S - 1):
        r = eng.tick(at(END_S + s))
        assert r.alerts == [] and r.warned == []
    assert alerts_of(engine) == []

    report = eng.tick(at(END_S + GRACE_S))
    expected_id = session_alert_id("nurse-1", "s-1", "overdue")
    assert report.alerts == [expected_id]
    assert rec.stored == [expected_id]  # handed to the pipeline like a device's alert
    [alert] = alerts_of(engine)
    assert alert.alert_id == expected_id and alert.kind == OVERDUE_KIND
    assert alert.device_id == "nurse-1" and alert.state == "open"
    assert (alert.pos_lat, alert.pos_lon, alert.pos_src) == (POS["lat"], POS["lon"], "gps")
    assert "server_side" in alert.flags
    raw = json.loads(alert.raw)
    assert raw["memo"] == MEMO and raw["session_id"] == "s-1"
    row = session_row(engine)
    assert row.state == ALERTED and row.alert_id == expected_id

    # Exactly once: later ticks change nothing.
    for s in (1, 600, 3600):
        r = eng.tick(at(END_S + GRACE_S + s))
        assert r.alerts == [] and r.warned == []
    assert len(alerts_of(engine)) == 1 and len(rec.stored) == 1 and len(rec.warnings()) == 1


def test_grace_time_is_per_role(engine: Engine) -> None:
    add_device(engine, "pharma-1", role="pharmacist")
    rec = Recorder()
    eng = make_engine(engine, rec)
    start(engine, device_id="pharma-1")
    eng.tick(at(END_S))
    assert rec.warnings()[0]["grace_s"] == 30
    assert eng.tick(at(END_S + 29)).alerts == []
    assert len(eng.tick(at(END_S + 30)).alerts) == 1


@pytest.mark.parametrize("action", ["extend", "checkin", "end"])
def test_extend_checkin_end_cancel_the_pending_alert(engine: Engine, action: str) -> None:
    add_device(engine)
    rec = Recorder()
    eng = make_engine(engine, rec)
    start(engine)
    eng.tick(at(END_S))  # warned
    answered_at = at(END_S + 60)
    new_end = at(END_S + 30 * 60)
    send(
        engine,
        session_msg(
            action,
            ts=answered_at,
            expected_end=new_end if action == "extend" else None,
        ),
        answered_at,
    )
    # The grace time runs out: no alert.
    for s in (GRACE_S, GRACE_S + 1, 2 * GRACE_S):
        assert eng.tick(at(END_S + s)).alerts == []
    row = session_row(engine)
    if action == "end":
        assert row.state == ENDED and row.due_at is None
        assert eng.tick(at(END_S + 24 * 3600)).warned == []
    else:
        assert row.state == ACTIVE
        # The visit is still watched: the next deadline is the new end, or the check-in plus
        # the extension.
        next_due = new_end if action == "extend" else answered_at + timedelta(seconds=EXTEND_S)
        assert row.due_at == next_due
        offset = (next_due - T0).total_seconds()
        assert eng.tick(at(offset - 1)).warned == []
        assert eng.tick(at(offset)).warned == ["s-1"]
        assert len(eng.tick(at(offset + GRACE_S)).alerts) == 1
    assert len(rec.warnings()) == (1 if action == "end" else 2)


def test_checkin_before_the_end_keeps_the_deadline(engine: Engine) -> None:
    add_device(engine)
    rec = Recorder()
    eng = make_engine(engine, rec)
    start(engine)
    send(engine, session_msg("checkin", ts=at(600)), at(600))
    eng.tick(at(601))
    assert session_row(engine).due_at == at(END_S)
    assert eng.tick(at(END_S)).warned == ["s-1"]


def test_checkin_tells_the_device_the_deadline_now_watched(engine: Engine) -> None:
    """The worker's screen shows the deadline from ``session.accepted``: after "Je vais
    bien" answers a warning it is the check-in plus the extension, never the end already past
    (a countdown reading "dépassée" while she is watched again would be a lie)."""
    add_device(engine)
    eng = make_engine(engine, Recorder())
    start(engine)

    def checkin(when: datetime) -> datetime | None:
        with write_scope(engine) as s:
            out = visits.on_message(
                s,
                device_id="nurse-1",
                msg=session_msg("checkin", ts=when),
                now=when,
                checkin_extend_s=EXTEND_S,
            )
        assert out.accepted
        return out.expected_end

    assert checkin(at(600)) == at(END_S)  # before the end: the announced end stands
    eng.tick(at(END_S))  # warned
    answered = at(END_S + 30)
    told = checkin(answered)
    assert told == answered + timedelta(seconds=EXTEND_S)
    eng.tick(at(END_S + 31))
    assert session_row(engine).due_at == told  # what the engine watches is what she is told


def test_start_without_end_uses_the_default_duration(engine: Engine) -> None:
    add_device(engine)
    rec = Recorder()
    eng = make_engine(engine, rec)
    send(engine, session_msg("start"), T0)
    assert session_row(engine).due_at is None  # computed by the engine, with its settings
    assert eng.tick(at(1)).scheduled == 1
    assert session_row(engine).due_at == at(3600)
    assert eng.tick(at(3600)).warned == ["s-1"]


def test_device_clock_ahead_is_corrected_earlier_only(engine: Engine) -> None:
    ahead = timedelta(minutes=10)
    assert server_expected_end(at(END_S) + ahead, T0 + ahead, T0) == at(END_S)
    # A clock behind (or a message that waited in the device's queue): kept as sent.
    assert server_expected_end(at(END_S), T0 - ahead, T0) == at(END_S)


def test_message_after_the_alert_is_recorded_but_never_stands_it_down(engine: Engine) -> None:
    from alert_server.alerts import service as alerts
    from alert_server.db import write_scope

    add_device(engine)
    rec = Recorder()
    eng = make_engine(engine, rec)
    start(engine)
    eng.tick(at(END_S))
    [alert_id] = eng.tick(at(END_S + GRACE_S)).alerts
    send(engine, session_msg("checkin", ts=at(END_S + 200)), at(END_S + 200))
    send(engine, session_msg("end", ts=at(END_S + 210)), at(END_S + 210))
    [alert] = alerts_of(engine)
    assert alert.state == "open"
    with write_scope(engine) as s:
        types = [e.type for e in alerts.events(s, alert_id=alert_id)]
    assert "session_checkin_after_alert" in types and "session_end_after_alert" in types


def test_a_new_start_supersedes_the_running_visit(engine: Engine) -> None:
    add_device(engine)
    rec = Recorder()
    eng = make_engine(engine, rec)
    start(engine, "s-1")
    send(engine, session_msg("start", "s-2", ts=at(600), expected_end=at(3000)), at(600))
    assert session_row(engine, "s-1").state == ENDED
    assert eng.tick(at(END_S)).warned == []  # s-1 no longer watched (s-2 ends at 3000 s)


def test_repeated_start_is_one_session(engine: Engine) -> None:
    add_device(engine)
    start(engine)
    start(engine)
    assert session_row(engine).state == ACTIVE


# --- offline during a visit -------------------------------------------------------------------


def test_offline_during_a_session_raises_an_alert_after_the_delay(engine: Engine) -> None:
    add_device(engine)
    rec = Recorder()
    eng = make_engine(engine, rec)
    start(engine)
    eng.tick(at(60))
    set_presence(engine, "nurse-1", online=False)  # the broker published its will
    assert eng.tick(at(100)).offline_armed == 1
    assert eng.tick(at(100 + OFFLINE_S - 1)).alerts == []
    [alert_id] = eng.tick(at(100 + OFFLINE_S)).alerts
    assert alert_id == session_alert_id("nurse-1", "s-1", "offline")
    [alert] = alerts_of(engine)
    assert alert.kind == OFFLINE_KIND and "device_offline" in alert.flags
    assert rec.stored == [alert_id]
    # One alert per session: the overdue timer does not add a second one.
    eng.tick(at(END_S))
    eng.tick(at(END_S + GRACE_S))
    assert len(alerts_of(engine)) == 1 and rec.warnings() == []


def test_back_online_before_the_delay_changes_nothing(engine: Engine) -> None:
    add_device(engine)
    rec = Recorder()
    eng = make_engine(engine, rec)
    start(engine)
    set_presence(engine, "nurse-1", online=False)
    eng.tick(at(100))
    set_presence(engine, "nurse-1", online=True)
    assert eng.tick(at(100 + OFFLINE_S - 5)).offline_cleared == 1
    for s in (OFFLINE_S, 2 * OFFLINE_S, 600):
        assert eng.tick(at(100 + s)).alerts == []
    assert alerts_of(engine) == []
    assert session_row(engine).offline_since is None


def test_offline_after_the_session_ended_is_no_alert(engine: Engine) -> None:
    add_device(engine)
    rec = Recorder()
    eng = make_engine(engine, rec)
    start(engine)
    send(engine, session_msg("end", ts=at(300)), at(300))
    set_presence(engine, "nurse-1", online=False)
    for s in (301, 400, 1000):
        assert eng.tick(at(s)).alerts == []
    assert alerts_of(engine) == []


# --- several servers ----------------------------------------------------------------------------


def test_two_servers_ticking_at_once_fire_each_timer_once(engine: Engine) -> None:
    n = 12
    for i in range(n):
        add_device(engine, f"nurse-{i}")
        start(engine, f"s-{i}", f"nurse-{i}")
    recs = [Recorder(), Recorder()]
    servers = [make_engine(engine, r) for r in recs]

    def together(now_s: float) -> None:
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(server_index: int) -> None:
            try:
                barrier.wait()
                servers[server_index].tick(at(now_s))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []

    together(END_S)
    warnings = recs[0].warnings() + recs[1].warnings()
    assert sorted(w["session_id"] for w in warnings) == sorted(f"s-{i}" for i in range(n))
    together(END_S + GRACE_S)
    together(END_S + GRACE_S + 1)
    stored = recs[0].stored + recs[1].stored
    assert sorted(stored) == sorted(
        session_alert_id(f"nurse-{i}", f"s-{i}", "overdue") for i in range(n)
    )
    assert len(alerts_of(engine)) == n


def test_a_tick_with_nothing_to_write_leaves_the_write_lock_to_the_alerts(
    tmp_path: Path,
) -> None:
    """On SQLite every alert's commit needs the database's one write lock, and the visits'
    tick runs every 5 s: while a visit runs with its device online and nothing is due, the
    tick writes nothing and must not take the lock (it took it three times). What is due is
    still written: the device going offline arms its timer."""
    engine = sqlite_engine(tmp_path)
    add_device(engine)
    rec = Recorder()
    eng = make_engine(engine, rec)
    start(engine)
    eng.tick(at(1))  # the visit's deadline is written
    assert done_while_write_locked(engine, partial(eng.tick, at(60))), (
        "a tick with nothing to write waited for the write lock"
    )
    set_presence(engine, "nurse-1", online=False)
    assert eng.tick(at(120)).offline_armed == 1
    assert eng.tick(at(120 + OFFLINE_S)).alerts == [session_alert_id("nurse-1", "s-1", "offline")]
