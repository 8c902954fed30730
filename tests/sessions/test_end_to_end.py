"""End to end: a real Mosquitto, ``vigie server`` in a subprocess, simulated telephony. An
overdue visit warns the device, then raises a ``session_overdue`` alert that the chain gets
(and acknowledges). (A visit ended or extended in time: tests/sessions/test_timers.py.)"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, select

from alert_server.alerts.models import Alert
from alert_server.sessions.service import session_alert_id
from dispatch.models import Escalation, Notification
from tests.support import Device, ServerProcess, add_device, server_env, wait_until
from vigie.brokers.mosquitto import LocalMosquitto
from vigie.timeutil import rfc3339, utcnow

REFERENT = "+33465710013"
MEMO = "Visite au domicile, 12 rue des Lilas, Aubagne"
DIRECTORY = f"""\
version: 1
departements: {{}}
national_fallback:
  - name: "Référent santé de permanence"
    phone: "{REFERENT}"
"""


def _session(session_id: str, action: str, end_in_s: float | None = None) -> dict[str, object]:
    now = utcnow()
    body: dict[str, object] = {
        "v": 1,
        "session_id": session_id,
        "action": action,
        "ts": rfc3339(now),
    }
    if end_in_s is not None:
        body["expected_end"] = rfc3339(now + timedelta(seconds=end_in_s))
        body["memo"] = MEMO
        body["pos"] = {"lat": 43.2928, "lon": 5.5708, "acc_m": 15, "src": "gps", "ts": rfc3339(now)}
    return body


def test_overdue_visit_alert_reaches_the_chain(
    broker: LocalMosquitto, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    referents = tmp_path / "referents.yaml"
    referents.write_text(DIRECTORY, encoding="utf-8")
    env = server_env(
        broker,
        db_url,
        VIGIE_REFERENTS_FILE=str(referents),
        VIGIE_SESSION_GRACE_S='{"nurse": 2}',
        VIGIE_SESSION_TICK_S="0.2",
        VIGIE_SIMULATED_AUTO_ACK_S="0.5",
    )
    late = Device("nurse-late", add_device(env, "nurse-late"), broker.port)
    server = ServerProcess(env, tmp_path / "server.log").start()
    try:
        assert late.connect()
        late.publish("status", json.dumps({"v": 1, "state": "online"}))
        late.publish("session", _session("visit-1", "start", end_in_s=1.0))
        wait_until(lambda: late.received("session.warning"), 10, "session.warning")
        [warning] = late.received("session.warning")
        assert warning["session_id"] == "visit-1" and warning["grace_s"] == 2

        alert_id = session_alert_id("nurse-late", "visit-1", "overdue")

        def notified() -> list[Notification]:
            with Session(engine) as s:
                return list(
                    s.exec(
                        select(Notification).where(
                            Notification.alert_id == alert_id,
                            Notification.phone == REFERENT,
                            Notification.status == "sent",
                        )
                    )
                )

        wait_until(lambda: bool(notified()), 15, "the referent notified")
        wait_until(lambda: late.received("alert.acknowledged", alert_id), 10, "acknowledged")
        with Session(engine) as s:
            alerts = list(s.exec(select(Alert)))
            esc = s.get(Escalation, alert_id)
        assert [(a.alert_id, a.kind, a.device_id) for a in alerts] == [
            (alert_id, "session_overdue", "nurse-late")
        ]
        assert alerts[0].dispatched_at is not None and alerts[0].pos_lat == 43.2928
        assert esc is not None and MEMO[:40] in json.loads(esc.brief)["place_label"]
    finally:
        late.close()
        server.stop()
    assert "Traceback" not in server.log()
