"""Ingest through a real Mosquitto into SQLite and PostgreSQL: stored before acknowledged,
exactly once, and nothing lost when the server dies."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

from sqlmodel import Session, func, select

from alert_server.alerts.models import Alert, AlertEvent
from alert_server.db import make_engine
from alert_server.devices.models import Device
from tests.support import Device as Dev
from tests.support import ServerProcess, add_device, alert_payload, wait_until
from vigie.brokers.mosquitto import LocalMosquitto


def _alerts(db_url: str) -> list[Alert]:
    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            return list(s.exec(select(Alert)))
    finally:
        engine.dispose()


def test_same_alert_three_times_is_one_alert_and_three_receipts(
    broker: LocalMosquitto, env: dict[str, str], server: ServerProcess, db_url: str
) -> None:
    dev = Dev("nurse-001", add_device(env, "nurse-001"), broker.port)
    assert dev.connect()
    alert_id = str(uuid.uuid4())
    body = alert_payload(alert_id, pos={"lat": 43.2965, "lon": 5.3698, "acc_m": 12, "src": "gps"})
    for _ in range(3):
        dev.publish("alert", body)
    wait_until(lambda: len(dev.received("alert.received", alert_id)) == 3, 10, "3 receipts")
    rows = _alerts(db_url)
    assert [a.alert_id for a in rows] == [alert_id]
    assert rows[0].device_id == "nurse-001"
    assert rows[0].pos_lat == 43.2965 and rows[0].pos_src == "gps"
    assert "unknown_device" not in rows[0].flags
    assert server.metric("vigie_alerts_stored_total") == 1
    assert server.metric("vigie_alert_repeats_total") == 2
    dev.close()


def test_alert_from_unknown_device_is_kept_and_flagged(
    broker: LocalMosquitto, env: dict[str, str], server: ServerProcess, db_url: str
) -> None:
    # A device registered on the broker but unknown to this database (e.g. provisioned on
    # another instance) still gets its alert stored and escalated.
    from vigie.brokers import files as broker_files

    broker_files.set_password(broker.passwd_file, "ghost-42", "ghostpassword")
    broker.reload()
    dev = Dev("ghost-42", "ghostpassword", broker.port)
    assert dev.connect()
    alert_id = str(uuid.uuid4())
    dev.publish("alert", alert_payload(alert_id, kind="panic_button_v2"))
    wait_until(lambda: dev.received("alert.received", alert_id), 10, "receipt")
    (row,) = _alerts(db_url)
    assert row.kind == "sos" and row.original_kind == "panic_button_v2"
    assert {"unknown_device", "unknown_kind", "no_position"} <= set(row.flags)
    dev.close()


def test_presence_from_heartbeats_and_will(
    broker: LocalMosquitto, env: dict[str, str], server: ServerProcess, db_url: str
) -> None:
    dev = Dev("pharma-7", add_device(env, "pharma-7", role="pharmacist"), broker.port)
    assert dev.connect()
    dev.publish("status", json.dumps({"v": 1, "state": "online"}))
    hb = {
        "v": 1, "ts": "2026-11-22T18:00:00Z", "batt": 64, "charging": False,
        "pos": {"lat": 43.3, "lon": 5.4, "acc_m": 35, "ts": "2026-11-22T17:59:58Z", "src": "gps"},
    }  # fmt: skip
    for _ in range(20):
        dev.publish("hb", hb, qos=0)
    engine = make_engine(db_url)

    def device() -> Device:
        with Session(engine) as s:
            d = s.get(Device, "pharma-7")
            assert d is not None
            return d

    wait_until(lambda: device().batt == 64 and device().online, 10, "presence flushed")
    d = device()
    assert d.last_lat == 43.3 and d.last_acc_m == 35 and d.last_seen_at is not None
    # The device vanishes without a word: the broker publishes its will (offline).
    assert dev.client is not None
    dev.client._sock.close()  # type: ignore[union-attr]  # simulate a dead link
    wait_until(lambda: not device().online, 60, "offline from the last will")
    assert device().last_lat == 43.3  # an offline status does not erase the last position
    engine.dispose()
    dev.close()  # its client reconnects after the dead link: stopped, not left to the worker


def test_sigkill_while_50_devices_publish_loses_nothing_and_duplicates_nothing(
    broker: LocalMosquitto, env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    from vigie.brokers import files as broker_files

    # 50 devices, registered straight in the broker's password file (fast) and unknown to the
    # database (their alerts are kept all the same).
    devices = []
    for i in range(50):
        broker_files.set_password(broker.passwd_file, f"dev-{i:03d}", f"password-{i:03d}")
    broker.reload()
    for i in range(50):
        d = Dev(f"dev-{i:03d}", f"password-{i:03d}", broker.port)
        assert d.connect(clean=False)
        devices.append(d)
    server = ServerProcess(env, tmp_path / "server.log").start()
    sent: dict[str, str] = {}
    stop = threading.Event()

    def press(d: Dev) -> None:
        # Each device presses its button 4 times, one new alert each time. No re-publishing:
        # this proves the broker session + ack-after-commit alone lose nothing.
        for _ in range(4):
            if stop.is_set():
                return
            aid = str(uuid.uuid4())
            sent[aid] = d.device_id
            d.publish("alert", alert_payload(aid))
            time.sleep(0.05)

    threads = [threading.Thread(target=press, args=(d,)) for d in devices]
    for t in threads:
        t.start()
    time.sleep(0.15)
    server.kill()  # mid-stream
    for t in threads:
        t.join()
    assert len(sent) == 200
    server.start()
    wait_until(lambda: len(_alerts(db_url)) >= 200, 60, "all 200 alerts stored")
    rows = _alerts(db_url)
    assert sorted(a.alert_id for a in rows) == sorted(sent)  # each exactly once (unique ids)
    for d in devices:
        mine = [aid for aid, dev in sent.items() if dev == d.device_id]
        for aid in mine:
            wait_until(lambda a=aid, dv=d: bool(dv.received("alert.received", a)), 20, "receipt")
    engine = make_engine(db_url)
    with Session(engine) as s:
        received = s.exec(
            select(func.count()).select_from(AlertEvent).where(AlertEvent.type == "received")
        ).one()
    engine.dispose()
    assert received == 200
    server.stop()
    for d in devices:
        d.close()


def test_sigterm_stops_cleanly_and_alerts_sent_meanwhile_arrive_after_restart(
    broker: LocalMosquitto, env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    dev = Dev("nurse-term", add_device(env, "nurse-term"), broker.port)
    assert dev.connect()
    server = ServerProcess(env, tmp_path / "server.log").start()
    first = str(uuid.uuid4())
    dev.publish("alert", alert_payload(first))
    wait_until(lambda: dev.received("alert.received", first), 10, "first receipt")
    server.terminate()
    assert "vigie server stopped" in server.log()
    # While the server is down, the broker holds the alert in the server's session.
    second = str(uuid.uuid4())
    dev.publish("alert", alert_payload(second))
    time.sleep(0.3)
    assert not dev.received("alert.received", second)
    server.start()
    wait_until(lambda: dev.received("alert.received", second), 20, "second receipt")
    assert sorted(a.alert_id for a in _alerts(db_url)) == sorted([first, second])
    server.stop()
    dev.close()
