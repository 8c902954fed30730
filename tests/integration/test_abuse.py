"""No worker's alert ever waits on another: floods, reused ids, wrong PINs and duress, tried
as an attacker would, through the real broker and a real server, on SQLite and PostgreSQL.

Each test breaks if its property breaks (they were written against the faults they pin):
- a flood of presses from one device is one incident, escalated once, every press receipted;
- an ``alert_id`` reused by another device is another alert, escalated on its own;
- wrong PINs are checked off the ingest writer, then lock the device out of cancelling;
- after a duress cancel the device receives exactly what a real cancel gives, as fast;
- every stored time is the arrival at the server;
- sessions are answered (accepted / rejected), server-raised alerts announced, bad uplinks
  answered with ``error``, downlinks carry their MQTT 5 expiry.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from alert_server.alerts.models import Alert, AlertEvent
from alert_server.db import make_engine
from alert_server.devices.models import Device as DeviceRow
from tests.support import (
    Device,
    ServerProcess,
    add_device,
    alert_payload,
    server_env,
    vigie,
    wait_until,
)
from vigie.brokers.mosquitto import LocalMosquitto
from vigie.timeutil import rfc3339, utcnow

PIN, DURESS_PIN, WRONG_PIN = "1234", "9999", "0000"
DIRECTORY = """\
version: 1
departements: {}
national_fallback:
  - name: "Permanence nationale"
    phone: "+33465710013"
escalation:
  steps:
    - {after_s: 0, contact: 1, channels: [sms]}
    - {after_s: 600, contact: 1, channels: [voice]}
  repeat: 0
"""


@pytest.fixture
def env(broker: LocalMosquitto, db_url: str, tmp_path: Path) -> dict[str, str]:
    directory = tmp_path / "referents.yaml"
    directory.write_text(DIRECTORY, encoding="utf-8")
    return server_env(broker, db_url, VIGIE_REFERENTS_FILE=str(directory))


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _device(env: dict[str, str], broker: LocalMosquitto, device_id: str) -> Device:
    dev = Device(device_id, add_device(env, device_id, pin=PIN, duress_pin=DURESS_PIN), broker.port)
    assert dev.connect()
    return dev


def _cancel(alert_id: str, pin: str) -> dict[str, Any]:
    return {"v": 1, "alert_id": alert_id, "ts": rfc3339(utcnow()), "pin": pin}


def _alerts(db: Engine, device_id: str) -> list[Alert]:
    with Session(db) as s:
        return list(
            s.exec(select(Alert).where(Alert.device_id == device_id).order_by(Alert.id))  # type: ignore[arg-type]
        )


def _alert(db: Engine, alert_id: str) -> Alert:
    with Session(db) as s:
        return s.exec(select(Alert).where(Alert.alert_id == alert_id)).one()


def _events(db: Engine, alert_id: str) -> list[str]:
    with Session(db) as s:
        rows = s.exec(
            select(AlertEvent.type).where(AlertEvent.alert_id == alert_id).order_by(AlertEvent.id)  # type: ignore[arg-type]
        )
        return list(rows)


def _escalated(db: Engine) -> dict[str, int]:
    """alert_id → how many first-step SMS were planned for it (the referent's messages)."""
    with db.connect() as c:
        rows = c.execute(
            text(
                "SELECT e.alert_id, count(n.id) FROM dispatch_escalation e "
                "LEFT JOIN dispatch_notification n ON n.alert_id = e.alert_id "
                "AND n.kind = 'alert' AND n.channel = 'sms' GROUP BY e.alert_id"
            )
        ).all()
    return {r[0]: int(r[1]) for r in rows}


# -- floods collapse, never drop ------------------------------------------------------------


def test_a_flood_of_presses_is_one_incident_escalated_once(
    broker: LocalMosquitto, env: dict[str, str], tmp_path: Path, db: Engine
) -> None:
    env = {**env, "VIGIE_FLOOD_WINDOW_S": "3"}
    server = ServerProcess(env, tmp_path / "server.log").start()
    dev = _device(env, broker, "nurse-flood")
    try:
        ids = [str(uuid.uuid4()) for _ in range(100)]
        for aid in ids:
            dev.client.publish(
                "vigie/v1/dev/nurse-flood/alert", json.dumps(alert_payload(aid)), qos=1
            )  # type: ignore[union-attr]
        wait_until(lambda: all(dev.received("alert.received", a) for a in ids), 30, "100 receipts")
        # A protocol retry stays a repeat; it does not count as a press.
        dev.publish("alert", alert_payload(ids[50]))
        wait_until(lambda: len(dev.received("alert.received", ids[50])) == 2, 10, "repeat")
        stored = _alerts(db, "nurse-flood")
        assert len(stored) == 100  # never dropped: every press is stored
        primary = next(a for a in stored if a.incident_of is None)
        assert primary.device_alert_id == ids[0]
        assert primary.presses == 100 and "repeated_presses" in primary.flags
        assert {a.incident_of for a in stored if a is not primary} == {primary.alert_id}
        wait_until(lambda: primary.alert_id in _escalated(db), 10, "the first escalated")
        time.sleep(1.0)
        # The referent is sent one SMS, not a hundred.
        assert _escalated(db) == {primary.alert_id: 1}

        # Another kind is another alert, escalated at once.
        fall = str(uuid.uuid4())
        dev.publish("alert", alert_payload(fall, kind="fall"))
        wait_until(lambda: fall in _escalated(db), 10, "the fall escalated")
        # A press after the window (3 s of silence here) is a new alert.
        time.sleep(3.5)
        later = str(uuid.uuid4())
        dev.publish("alert", alert_payload(later))
        wait_until(lambda: later in _escalated(db), 10, "the later press escalated")
        assert _alert(db, later).incident_of is None
        assert len(_escalated(db)) == 3
    finally:
        dev.close()
        server.stop()


def test_acknowledging_the_incident_tells_every_press(
    broker: LocalMosquitto, env: dict[str, str], server: ServerProcess, db: Engine
) -> None:
    dev = _device(env, broker, "nurse-presses")
    token = _admin_token(env, server)
    try:
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        dev.publish("alert", alert_payload(first))
        dev.publish("alert", alert_payload(second))
        wait_until(lambda: bool(dev.received("alert.received", second)), 10, "receipts")
        wait_until(lambda: first in _escalated(db), 10, "escalated")
        r = httpx.post(
            f"{server.url}/api/alerts/{first}/ack",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        for aid in (first, second):
            wait_until(lambda a=aid: bool(dev.received("alert.acknowledged", a)), 10, "told")
        ack = dev.received("alert.acknowledged", second)[0]
        assert ack["by"] and "+" not in ack["by"]  # a service's name, never a phone number
        # A press after the acknowledgement joins the incident and hears help is coming.
        third = str(uuid.uuid4())
        dev.publish("alert", alert_payload(third))
        wait_until(lambda: bool(dev.received("alert.acknowledged", third)), 10, "third told")
        assert dev.about(third) == ["alert.received", "alert.acknowledged"]
        assert _alert(db, third).state == "acknowledged"
        assert _alert(db, first).presses == 3
    finally:
        dev.close()


# -- identity is (device_id, alert_id) ------------------------------------------------------


def test_an_alert_id_reused_by_another_device_is_another_alert(
    broker: LocalMosquitto, env: dict[str, str], server: ServerProcess, db: Engine
) -> None:
    a, b = _device(env, broker, "nurse-a"), _device(env, broker, "nurse-b")
    try:
        shared = "alert-0001"
        a.publish("alert", alert_payload(shared))
        wait_until(lambda: bool(a.received("alert.received", shared)), 10, "a's receipt")
        b.publish("alert", alert_payload(shared))
        wait_until(lambda: bool(b.received("alert.received", shared)), 10, "b's receipt")
        # Repeats from each device stay repeats of their own alert.
        a.publish("alert", alert_payload(shared))
        b.publish("alert", alert_payload(shared))
        wait_until(lambda: len(b.received("alert.received", shared)) == 2, 10, "b's repeat")
        wait_until(lambda: len(a.received("alert.received", shared)) == 2, 10, "a's repeat")
        alert_a, alert_b = _alerts(db, "nurse-a"), _alerts(db, "nurse-b")
        assert len(alert_a) == 1 and len(alert_b) == 1
        assert alert_a[0].device_alert_id == alert_b[0].device_alert_id == shared
        assert alert_a[0].alert_id != alert_b[0].alert_id
        # Both workers' alerts are escalated, each on its own.
        wait_until(
            lambda: {alert_a[0].alert_id, alert_b[0].alert_id} <= set(_escalated(db)),
            10,
            "both escalated",
        )
        # b cancels its own alert by the id it knows; a's alert goes on.
        b.publish("cancel", _cancel(shared, PIN))
        wait_until(lambda: bool(b.received("alert.cancelled", shared)), 10, "b cancelled")
        assert _alert(db, alert_b[0].alert_id).state == "cancelled"
        assert _alert(db, alert_a[0].alert_id).state == "open"
        assert not a.received("alert.cancelled")
    finally:
        a.close()
        b.close()


# -- wrong PINs: off the writer, then locked out -------------------------------------------


def _receipt_latency(dev: Device) -> float:
    aid = str(uuid.uuid4())
    t = time.monotonic()
    dev.publish("alert", alert_payload(aid, kind="sos_silent"))
    wait_until(lambda: bool(dev.received("alert.received", aid)), 60, "receipt")
    return dev.arrival("alert.received", aid) - t


def test_wrong_pins_do_not_delay_another_devices_alerts(
    broker: LocalMosquitto, env: dict[str, str], server: ServerProcess, db: Engine
) -> None:
    """50 wrong-PIN cancels from one device: another device's receipts stay within 3× their
    unloaded time (argon2 runs off the ingest writer, and the lockout makes the rest free)."""
    attacker, other = _device(env, broker, "nurse-attacker"), _device(env, broker, "nurse-other")
    try:
        target = str(uuid.uuid4())
        attacker.publish("alert", alert_payload(target))
        wait_until(lambda: bool(attacker.received("alert.received", target)), 10, "target")
        # other's presses join one incident (same kind, within the flood window): each is
        # still stored and receipted, which is what is timed here.
        unloaded = statistics.median(_receipt_latency(other) for _ in range(15))
        for _ in range(50):
            attacker.client.publish(  # type: ignore[union-attr]
                "vigie/v1/dev/nurse-attacker/cancel", json.dumps(_cancel(target, WRONG_PIN)), qos=1
            )
        loaded = statistics.median(_receipt_latency(other) for _ in range(15))
        print(
            f"\nreceipt p50 unloaded {unloaded * 1000:.1f} ms, during 50 wrong PINs "
            f"{loaded * 1000:.1f} ms"
        )
        # 3× the unloaded figure, with 15 ms of slack for a busy 2-core machine's scheduling
        # (before the fix: seconds).
        assert loaded <= 3 * unloaded + 0.015
        wait_until(
            lambda: len(attacker.received("cancel.rejected", target)) == 50, 60, "50 refusals"
        )
        reasons = [c["reason"] for c in attacker.received("cancel.rejected", target)]
        assert reasons[:5] == ["wrong_pin"] * 5 and set(reasons[5:]) == {"locked"}
    finally:
        attacker.close()
        other.close()


def test_repeated_wrong_pins_lock_cancelling_while_the_alert_escalates(
    broker: LocalMosquitto, env: dict[str, str], server: ServerProcess, db: Engine
) -> None:
    dev = _device(env, broker, "nurse-lock")
    try:
        aid = str(uuid.uuid4())
        dev.publish("alert", alert_payload(aid))
        wait_until(lambda: aid in _escalated(db), 10, "escalated")
        for i in range(5):
            dev.publish("cancel", _cancel(aid, WRONG_PIN))
            wait_until(
                lambda n=i + 1: len(dev.received("cancel.rejected", aid)) == n, 10, "refusal"
            )
        # Locked: even the right PIN (and the duress PIN) is not checked now.
        dev.publish("cancel", _cancel(aid, PIN))
        wait_until(lambda: len(dev.received("cancel.rejected", aid)) == 6, 10, "locked")
        reasons = [c["reason"] for c in dev.received("cancel.rejected", aid)]
        assert reasons == ["wrong_pin"] * 5 + ["locked"]
        assert not dev.received("alert.cancelled", aid)
        alert = _alert(db, aid)
        assert alert.state == "open"  # still escalating
        assert {"pin_errors", "pin_locked"} <= set(alert.flags)  # the dispatcher sees it
        events = _events(db, aid)
        assert events.count("pin_wrong") == 5 and "pin_lockout" in events
        assert "pin_locked_out" in events
        with Session(db) as s:
            row = s.get(DeviceRow, "nurse-lock")
            assert row is not None and row.pin_locked_until is not None
        with db.connect() as c:
            status = c.execute(
                text("SELECT status FROM dispatch_escalation WHERE alert_id = :a"), {"a": aid}
            ).scalar()
        assert status == "active"
    finally:
        dev.close()


# -- duress is invisible on the device ------------------------------------------------------


def _admin_token(env: dict[str, str], server: ServerProcess) -> str:
    out = vigie(env, "users", "add", "regulation", "--password", "mot de passe très long",
                "--role", "admin")  # fmt: skip
    assert out.returncode == 0, out.stderr
    r = httpx.post(
        f"{server.url}/api/token",
        data={"username": "regulation", "password": "mot de passe très long"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def test_after_a_duress_cancel_the_device_sees_exactly_a_real_cancel(
    broker: LocalMosquitto, env: dict[str, str], server: ServerProcess, db: Engine
) -> None:
    """The same downlink sequence for both PINs, also after the dispatcher acknowledges and
    resolves both alerts, and the same latency distribution (interleaved trials)."""
    dev = _device(env, broker, "nurse-duress")
    token = _admin_token(env, server)
    headers = {"Authorization": f"Bearer {token}"}
    latencies: dict[str, list[float]] = {PIN: [], DURESS_PIN: []}
    ids: dict[str, list[str]] = {PIN: [], DURESS_PIN: []}
    try:
        for i in range(16):
            pin = PIN if i % 2 == 0 else DURESS_PIN
            aid = str(uuid.uuid4())
            ids[pin].append(aid)
            dev.publish("alert", alert_payload(aid, kind="sos" if i % 4 < 2 else "sos_silent"))
            wait_until(lambda a=aid: a in _escalated(db), 10, "escalated")
            t = time.monotonic()
            dev.publish("cancel", _cancel(aid, pin))
            wait_until(lambda a=aid: bool(dev.received("alert.cancelled", a)), 10, "cancelled")
            latencies[pin].append(dev.arrival("alert.cancelled", aid) - t)
            # The dispatcher takes and closes it (a duress alert stays open until then, and
            # the next press would join its incident).
            httpx.post(f"{server.url}/api/alerts/{aid}/ack", headers=headers, timeout=10)
            r = httpx.post(
                f"{server.url}/api/alerts/{aid}/resolve",
                headers=headers,
                json={"outcome": "false_alarm", "note": None},
                timeout=10,
            )
            assert r.status_code == 200, r.text
        time.sleep(1.5)
        # No position in these alerts: the server asked for one (locate) before the cancel.
        expected = ["alert.received", "locate", "alert.cancelled"]
        for aid in ids[PIN] + ids[DURESS_PIN]:
            assert dev.about(aid) == expected, aid
        assert all(_alert(db, a).duress for a in ids[DURESS_PIN])
        assert not any(_alert(db, a).duress for a in ids[PIN])
        real, duress = statistics.median(latencies[PIN]), statistics.median(latencies[DURESS_PIN])
        print(
            f"\ncancel → alert.cancelled p50: real {real * 1000:.1f} ms, "
            f"duress {duress * 1000:.1f} ms"
        )
        # Before the fix the duress reply came 200–340 ms sooner (one argon2 check less).
        assert abs(real - duress) <= max(0.030, 0.25 * real)
    finally:
        dev.close()


# -- stored times are arrival times ---------------------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_created_at_is_the_arrival_not_the_commit(
    broker: LocalMosquitto, env: dict[str, str], server: ServerProcess, db: Engine
) -> None:
    dev = _device(env, broker, "nurse-arrival")
    try:
        aid = str(uuid.uuid4())
        assert db.url.database
        lock = sqlite3.connect(db.url.database, isolation_level=None)
        try:
            # Another connection holds SQLite's write lock for 2 s: the batch waits.
            lock.execute("BEGIN IMMEDIATE")
            sent = utcnow()
            dev.publish("alert", alert_payload(aid))
            time.sleep(2.0)
            lock.execute("ROLLBACK")
        finally:
            lock.close()
        wait_until(lambda: bool(dev.received("alert.received", aid)), 30, "receipt")
        created = _alert(db, aid).created_at.replace(tzinfo=sent.tzinfo)
        assert created - sent < timedelta(seconds=1), (sent, created)
    finally:
        dev.close()


# -- sessions, server-raised alerts, errors, expiry -----------------------------------------


def _session(session_id: str, action: str, **extra: Any) -> dict[str, Any]:
    return {"v": 1, "session_id": session_id, "action": action, "ts": rfc3339(utcnow()), **extra}


def test_every_session_message_is_answered_and_raised_alerts_announced(
    broker: LocalMosquitto, env: dict[str, str], tmp_path: Path, db: Engine
) -> None:
    env = {
        **env,
        "VIGIE_SESSION_GRACE_S": '{"nurse": 1}',
        "VIGIE_SESSION_TICK_S": "0.3",
    }
    server = ServerProcess(env, tmp_path / "server.log").start()
    dev = _device(env, broker, "nurse-visit")
    try:
        end = rfc3339(utcnow() + timedelta(seconds=1))
        dev.publish("session", _session("v-1", "start", expected_end=end, memo="12 rue des Lilas"))
        wait_until(lambda: bool(dev.received("session.accepted")), 10, "accepted")
        accepted = dev.received("session.accepted")[0]
        assert accepted["session_id"] == "v-1" and accepted["action"] == "start"
        assert accepted["expected_end"]
        past = rfc3339(utcnow() - timedelta(minutes=5))
        dev.publish("session", _session("v-2", "start", expected_end=past))
        dev.publish("session", _session("v-3", "end"))
        dev.publish("session", _session("v-4", "start", memo="x" * 600))
        dev.publish("session", b'{"v": 1, "session_id": ')
        wait_until(lambda: len(dev.received("session.rejected")) == 3, 10, "rejections")
        reasons = {c["session_id"]: c["reason"] for c in dev.received("session.rejected")}
        assert reasons == {"v-2": "in_the_past", "v-3": "unknown_session", "v-4": "memo_too_long"}
        wait_until(lambda: bool(dev.received("error")), 10, "error for unreadable JSON")
        assert dev.received("error")[0]["reason"] == "bad_json"
        # The visit overruns: warning, then the server raises the alert and says so.
        wait_until(lambda: bool(dev.received("session.warning")), 15, "warning")
        wait_until(lambda: bool(dev.received("alert.raised")), 15, "alert.raised")
        raised = dev.received("alert.raised")[0]
        assert raised["kind"] == "session_overdue"
        # A check-in now does not stand the raised alert down (only the PIN does).
        dev.publish("session", _session("v-1", "checkin"))
        wait_until(lambda: len(dev.received("session.accepted")) == 2, 10, "checkin answered")
        assert _alert(db, raised["alert_id"]).state == "open"
        dev.publish("cancel", _cancel(raised["alert_id"], PIN))
        wait_until(
            lambda: bool(dev.received("alert.cancelled", raised["alert_id"])), 10, "cancelled"
        )
    finally:
        dev.close()
        server.stop()


def test_bad_uplinks_are_answered_and_downlinks_expire(
    broker: LocalMosquitto, env: dict[str, str], server: ServerProcess
) -> None:
    dev = _device(env, broker, "nurse-errors")
    try:
        dev.publish("hb", b"not json")
        wait_until(lambda: bool(dev.received("error")), 10, "error")
        err = dev.received("error")[0]
        assert err == {**err, "topic": "vigie/v1/dev/nurse-errors/hb", "reason": "bad_json"}
        aid = str(uuid.uuid4())
        dev.publish("alert", alert_payload(aid))
        wait_until(lambda: bool(dev.received("alert.received", aid)), 10, "receipt")
        assert dev.expiry("alert.received") == 24 * 3600
        assert dev.expiry("error") is not None
        dev.publish("cancel", _cancel("no-such-alert", PIN))
        wait_until(lambda: bool(dev.received("cancel.rejected", "no-such-alert")), 10, "refused")
        assert dev.received("cancel.rejected", "no-such-alert")[0]["reason"] == "unknown_alert"
    finally:
        dev.close()


def test_a_silent_device_goes_offline_after_three_missed_heartbeats(
    broker: LocalMosquitto, env: dict[str, str], server: ServerProcess, db: Engine
) -> None:
    dev = _device(env, broker, "nurse-silent")
    try:
        for _ in range(4):
            dev.publish("hb", {"v": 1, "ts": rfc3339(utcnow()), "batt": 80})
            time.sleep(1.0)

        def online() -> bool:
            with Session(db) as s:
                row = s.get(DeviceRow, "nurse-silent", populate_existing=True)
                return bool(row and row.online)

        wait_until(online, 10, "online")
        # Still connected, no will: only the missed heartbeats tell.
        wait_until(lambda: not online(), 15, "offline after three missed heartbeats")
    finally:
        dev.close()
