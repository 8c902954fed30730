"""SMS to the worker herself: low battery and offline notices (once per episode), victim
support after a genuine incident (not after a false alarm, not when opted out)."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from sqlalchemy import Engine

from alert_server.alerts import service as alerts
from alert_server.db import write_scope
from alert_server.devices import service as devices
from alert_server.devices.presence import PresenceTracker
from alert_server.downlink import Downlink
from alert_server.followup.messenger import WorkerMessenger
from alert_server.followup.notices import NoticeConfig
from alert_server.followup.victim_support import load_directory, set_opt_out
from alert_server.pipeline import Pipeline
from alert_server.sessions import service as visits
from dispatch.channels.base import SendResult
from dispatch.messages import is_gsm7
from tests.sessions.helpers import T0, WORKER_PHONE, add_device, send, session_msg, set_presence
from tests.support import done_while_write_locked, sqlite_engine

NOTICES = NoticeConfig(low_battery_pct=15, offline_after_s=600, rearm_s=1800)
# The messenger's ports, plugged as the composition root (alert_server/background.py) does.
PORTS = {"devices": devices.in_service, "in_visit": visits.devices_in_visit}


class RecordingNotifier:
    name = "recording"

    def __init__(self) -> None:
        self.sms: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def send_sms(self, *, to: str, body: str, notification_id: int, alert_id: str) -> SendResult:
        with self.lock:
            self.sms.append((to, body))
        return SendResult(sid=f"SM{uuid.uuid4().hex}", status="queued")

    def place_call(self, *, to: str, notification_id: int, alert_id: str) -> SendResult:
        raise AssertionError("no call is ever placed to a worker by the follow-up")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_low_battery_once_per_episode(engine: Engine) -> None:
    add_device(engine)
    rec = RecordingNotifier()
    m = WorkerMessenger(engine, rec, **PORTS, notices=NOTICES)
    set_presence(engine, "nurse-1", batt=14, charging=False)
    m.tick(at(0))
    [(to, body)] = rec.sms
    assert to == WORKER_PHONE and "batterie" in body and "14 %" in body and is_gsm7(body)
    # A battery hovering around the threshold, a charger plugged in and out: same episode.
    for t, batt, charging in ((60, 16, False), (120, 14, False), (180, 14, True), (240, 13, False)):
        set_presence(engine, "nurse-1", batt=batt, charging=charging)
        m.tick(at(t))
    assert len(rec.sms) == 1
    # Charged and fine for the re-arm time: the episode is over; the next one is told.
    set_presence(engine, "nurse-1", batt=90, charging=False)
    m.tick(at(300))
    m.tick(at(300 + 1800))
    set_presence(engine, "nurse-1", batt=9)
    m.tick(at(300 + 1801))
    assert len(rec.sms) == 2 and "9 %" in rec.sms[1][1]


def test_offline_outside_a_session_once_per_episode(engine: Engine) -> None:
    add_device(engine)
    rec = RecordingNotifier()
    m = WorkerMessenger(engine, rec, **PORTS, notices=NOTICES)
    set_presence(engine, "nurse-1", online=False)
    m.tick(at(0))
    m.tick(at(599))
    assert rec.sms == []  # a short drop says nothing
    m.tick(at(600))
    [(to, body)] = rec.sms
    assert to == WORKER_PHONE and "plus connectée" in body
    # Flapping: online, offline, online… one SMS for the whole episode.
    for i in range(1, 10):
        set_presence(engine, "nurse-1", online=i % 2 == 0)
        m.tick(at(600 + 60 * i))
    m.tick(at(600 + 60 * 10 + 600))
    assert len(rec.sms) == 1


def test_short_drops_never_add_up_to_a_notice(engine: Engine) -> None:
    add_device(engine)
    rec = RecordingNotifier()
    m = WorkerMessenger(engine, rec, **PORTS, notices=NOTICES)
    for i in range(20):  # offline 5 min, online 1 min, again and again
        set_presence(engine, "nurse-1", online=False)
        m.tick(at(360 * i))
        m.tick(at(360 * i + 300))
        set_presence(engine, "nurse-1", online=True)
        m.tick(at(360 * i + 301))
    assert rec.sms == []


def test_offline_during_a_session_is_not_a_notice(engine: Engine) -> None:
    add_device(engine)
    send(engine, session_msg("start", expected_end=at(7200)), T0)
    rec = RecordingNotifier()
    m = WorkerMessenger(engine, rec, **PORTS, notices=NOTICES)
    set_presence(engine, "nurse-1", online=False)
    for t in (0, 600, 1200):
        m.tick(at(t))
    assert rec.sms == []  # the session raises its own alert (alert_server.sessions)


# --- victim support --------------------------------------------------------------------------

DIRECTORY = """\
version: 1
departements:
  "13":
    association: "Association d'aide aux victimes 13"
    phone: "04 00 00 00 13"
"""


def _alert(engine: Engine, departement: str | None = "13") -> str:
    alert_id = str(uuid.uuid4())
    with write_scope(engine) as s:
        alerts.insert_alert(
            s,
            values={
                "alert_id": alert_id,
                "device_id": "nurse-1",
                "kind": "sos",
                "state": "acknowledged",
                "duress": False,
                "flags": [],
                "created_at": T0,
                "departement": departement,
                "raw": "{}",
            },
        )
    return alert_id


def test_victim_support_after_a_genuine_incident_only(engine: Engine, tmp_path: Path) -> None:
    worker_id = add_device(engine)
    path = tmp_path / "soutien.yaml"
    path.write_text(DIRECTORY, encoding="utf-8")
    rec = RecordingNotifier()
    m = WorkerMessenger(engine, rec, **PORTS, notices=NOTICES, support=load_directory(path))
    pipeline = Pipeline(
        engine,
        presence=PresenceTracker(engine),
        downlink=Downlink(lambda t, p, expiry_s=None: None),
    )
    try:
        genuine, false_alarm, opted_out = _alert(engine), _alert(engine), _alert(engine)
        assert pipeline.resolve(
            genuine, actor="disp", outcome="physical_assault", note=None, now=at(600)
        )
        assert pipeline.resolve(
            false_alarm, actor="disp", outcome="false_alarm", note=None, now=at(600)
        )
        m.tick(at(601))
        [(to, body)] = rec.sms
        assert to == WORKER_PHONE
        for words in ("116 006", "Association d'aide aux victimes 13", "04 00 00 00 13"):
            assert words in body
        assert "9 juillet 2025" in body and "plainte" in body
        assert "22/11 à 14:00" in body  # Paris time of the incident
        assert is_gsm7(body)
        with write_scope(engine) as s:
            assert "victim_support_offered" in [e.type for e in alerts.events(s, alert_id=genuine)]
        # Opted out: nothing, even for a genuine incident.
        with write_scope(engine) as s:
            set_opt_out(s, worker_id=worker_id, opt_out=True, now=at(700))
        pipeline.resolve(opted_out, actor="disp", outcome="armed_assault", note=None, now=at(800))
        m.tick(at(801))
        m.tick(at(900))
        assert len(rec.sms) == 1
    finally:
        pipeline.shutdown()


def test_a_tick_with_nothing_to_tell_leaves_the_write_lock_to_the_alerts(
    tmp_path: Path,
) -> None:
    """On SQLite every alert's commit needs the database's one write lock, and the notices'
    tick looks at every device in service every 5 s: when no episode changes it writes
    nothing and must not take the lock (it held it for the whole look). A battery going low
    is still told."""
    engine = sqlite_engine(tmp_path)
    add_device(engine)
    rec = RecordingNotifier()
    m = WorkerMessenger(engine, rec, **PORTS, notices=NOTICES)
    set_presence(engine, "nurse-1", batt=80, charging=False)
    m.tick(at(0))
    assert done_while_write_locked(engine, partial(m.tick, at(5))), (
        "a tick with nothing to tell waited for the write lock"
    )
    set_presence(engine, "nurse-1", batt=12)
    m.tick(at(10))
    [(to, body)] = rec.sms
    assert to == WORKER_PHONE and "12 %" in body
