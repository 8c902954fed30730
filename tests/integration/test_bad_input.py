"""A battery of bad input: the server stays healthy, counts each, and keeps every alert."""

from __future__ import annotations

import json
import uuid

from sqlmodel import Session, select

from alert_server.alerts.models import Alert
from alert_server.db import make_engine
from tests.support import Device, ServerProcess, add_device, alert_payload, wait_until
from vigie.brokers import files as broker_files
from vigie.brokers.mosquitto import LocalMosquitto


def test_bad_input_battery(
    broker: LocalMosquitto, env: dict[str, str], server: ServerProcess, db_url: str
) -> None:
    dev = Device("nurse-bad", add_device(env, "nurse-bad"), broker.port)
    assert dev.connect()
    keys = ("types", "big", "nan", "range", "y3000", "extra", "mismatch")
    ids = {k: str(uuid.uuid4()) for k in keys}
    alert_cases: dict[str, str | bytes] = {
        # wrong types: kind is a number, batt a string -> kept, details unknown
        "types": json.dumps({"v": 1, "alert_id": ids["types"], "kind": 7, "ts": 5, "batt": "x"}),
        # 5 KB payload, over the 4096-byte limit, with a readable alert_id
        "big": json.dumps(alert_payload(ids["big"], memo="x" * 5000)),
        # NaN coordinates (not valid JSON, but Python's json would accept it)
        "nan": json.dumps(alert_payload(ids["nan"], pos={"lat": float("nan"), "lon": 5.3})),
        # out-of-range coordinates
        "range": json.dumps(alert_payload(ids["range"], pos={"lat": 123.0, "lon": 5.3})),
        # a timestamp in year 3000
        "y3000": json.dumps({**alert_payload(ids["y3000"]), "ts": "3000-01-01T00:00:00Z"}),
        # unknown fields and an unknown kind
        "extra": json.dumps({**alert_payload(ids["extra"], kind="kidnap"), "firmware": "9.1"}),
        # topic/device mismatch: the payload names another device than its topic
        "mismatch": json.dumps(alert_payload(ids["mismatch"], device_id="nurse-other")),
    }
    for body in alert_cases.values():
        dev.publish("alert", body)
    # Broken JSON on an alert topic: no readable alert_id, still an alert.
    dev.publish("alert", b"{this is not json")
    # Non-alert garbage: counted and dropped, never stops the loop.
    dev.publish("hb", b"\xff\xfe not utf8")
    dev.publish("hb", json.dumps({"v": 1, "ts": "yesterday"}))
    dev.publish("pos", json.dumps({"v": 1, "ts": "2026-11-22T18:00:00Z", "pos": {"lat": 95}}))
    dev.publish("cancel", b"[1,2,3]")
    dev.publish("status", json.dumps({"v": 1, "state": "sleeping"}))
    dev.publish("session", json.dumps({"v": 1, "session_id": "s", "action": "dance", "ts": "x"}))
    dev.publish("hb", json.dumps({"v": 1, "ts": "2026-11-22T18:00:00Z", "batt": "full"}))
    # Topic/device mismatch outside alerts: refused.
    dev.publish("hb", json.dumps({"v": 1, "ts": "2026-11-22T18:00:00Z", "device_id": "x-1"}))
    # A badly named device on an alert topic (registered on the broker by hand).
    broker_files.set_password(broker.passwd_file, "bad.name", "some-password")
    broker.reload()
    odd = Device("bad.name", "some-password", broker.port)
    assert odd.connect()
    odd_id = str(uuid.uuid4())
    odd.publish("alert", json.dumps(alert_payload(odd_id)))

    expected = [*ids.values(), odd_id]
    wait_until(lambda: len(_alerts(db_url)) == len(expected) + 1, 15, "all alerts kept")
    rows = {a.alert_id: a for a in _alerts(db_url)}
    assert set(expected) <= set(rows)
    unreadable = [a for a in rows if a.startswith("unreadable-")]
    assert len(unreadable) == 1 and "malformed" in rows[unreadable[0]].flags
    assert {"malformed", "unknown_kind"} <= set(rows[ids["types"]].flags)
    assert {"malformed", "oversized"} <= set(rows[ids["big"]].flags)
    assert "malformed" in rows[ids["nan"]].flags and rows[ids["nan"]].pos_lat is None
    assert "malformed" in rows[ids["range"]].flags and rows[ids["range"]].pos_lat is None
    assert "clock_skew" in rows[ids["y3000"]].flags
    assert rows[ids["extra"]].original_kind == "kidnap" and rows[ids["extra"]].kind == "sos"
    assert "unknown_fields" in rows[ids["extra"]].flags
    assert "bad_device_id" in rows[odd_id].flags
    assert "device_mismatch" in rows[ids["mismatch"]].flags
    assert rows[ids["mismatch"]].device_id == "nurse-bad"
    # Every device got its receipt, even for a malformed alert.
    for k in ids.values():
        wait_until(lambda a=k: bool(dev.received("alert.received", a)), 10, f"receipt {k}")
    # Everything counted.
    wait_until(lambda: server.metric("vigie_mqtt_rejected_total", 'type="hb"') >= 4, 10, "hb")
    assert server.metric("vigie_mqtt_rejected_total", 'reason="device_mismatch"') == 1
    assert server.metric("vigie_mqtt_rejected_total", 'reason="kept_as_alert"') == 5
    assert server.metric("vigie_mqtt_rejected_total", 'type="pos"') == 1
    assert server.metric("vigie_mqtt_rejected_total", 'type="cancel"') == 1
    assert server.metric("vigie_mqtt_rejected_total", 'type="status"') == 1
    assert server.metric("vigie_mqtt_rejected_total", 'type="session"') == 1
    assert server.metric("vigie_mqtt_unknown_fields_total") == 0  # the alert flag counts it
    assert server.health()[0] == 200
    # And the loop still works for a good alert afterwards.
    good = str(uuid.uuid4())
    dev.publish("alert", alert_payload(good))
    wait_until(lambda: bool(dev.received("alert.received", good)), 10, "good alert receipt")
    dev.close()
    odd.close()


def _alerts(db_url: str) -> list[Alert]:
    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            return list(s.exec(select(Alert)))
    finally:
        engine.dispose()
