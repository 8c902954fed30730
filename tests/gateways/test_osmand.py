"""The OsmAnd gateway against a real server: every request shape Traccar Client and Traccar
send, 200 only after the commit, retries that stay one alert, unknown identifiers, the rate
limit, and requests that cannot be read (on SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from alert_server.devices.models import Device
from tests.gateways.conftest import Stack, database_locked
from tests.support import wait_until


def _url(stack: Stack) -> str:
    return stack.server.url + "/gateway/osmand"


def _form(stack: Stack, **fields: Any) -> httpx.Response:
    return httpx.post(_url(stack), data={k: str(v) for k, v in fields.items()}, timeout=30)


def _json(stack: Stack, body: Any) -> httpx.Response:
    return httpx.post(_url(stack), json=body, timeout=30)


def test_registration_prints_identifier_and_url(sqlite_stack: Stack) -> None:
    # The CLI's printed output does not depend on the database: checked on SQLite only.
    stack = sqlite_stack
    reg = stack.add_osmand_cli("traccar-reg")
    assert reg["device_id"] == "traccar-reg"
    assert reg["server_url"] == "https://vigie.example.fr/gateway/osmand"
    assert len(reg["osmand_id"]) >= 40  # a long random secret, not an 8-digit id
    # Another registration: another secret.
    assert reg["osmand_id"] != stack.add_osmand("traccar-reg2")["osmand_id"]


def test_v10_form_sos_is_stored_before_200_and_a_retry_is_one_alert(stack: Stack) -> None:
    ident = stack.add_osmand("traccar-v10")["osmand_id"]
    ts = int(time.time())
    fields = dict(
        id=ident, lat=43.2965, lon=5.3698, timestamp=ts, accuracy=12.5, altitude=30,
        speed=1.2, bearing=90, batt=64, charge="false", alarm="sos",
    )  # fmt: skip
    r = _form(stack, **fields)
    assert r.status_code == 200, r.text
    # Answered 200: already committed (read at once, no waiting).
    alerts = stack.alerts("traccar-v10")
    assert len(alerts) == 1
    a = alerts[0]
    assert a.kind == "sos" and a.batt == 64
    assert (a.pos_lat, a.pos_lon, a.pos_acc_m) == (43.2965, 5.3698, 12.5)
    assert a.device_ts is not None and int(a.device_ts.timestamp()) == ts
    # The same request again (a client retrying): a repeat, not a second alert.
    assert _form(stack, **fields).status_code == 200
    assert len(stack.alerts("traccar-v10")) == 1
    # The same fields as a query string (GET, the native clients), timestamp in milliseconds.
    r = httpx.get(_url(stack), params={**fields, "timestamp": ts * 1000}, timeout=30)
    assert r.status_code == 200
    assert len(stack.alerts("traccar-v10")) == 1
    # The alert goes down the normal path: routed and escalated once.
    wait_until(lambda: stack.alerts("traccar-v10")[0].dispatched_at is not None, 60, "dispatch")


def test_a_second_sos_within_the_flood_window_joins_the_first(stack: Stack) -> None:
    ident = stack.add_osmand("traccar-flood")["osmand_id"]
    ts = int(time.time())
    assert _form(stack, id=ident, lat=45.0, lon=4.0, timestamp=ts, alarm="sos").status_code == 200
    assert (
        _form(stack, id=ident, lat=45.0, lon=4.0, timestamp=ts + 5, alarm="sos").status_code == 200
    )
    first, second = stack.alerts("traccar-flood")
    assert first.incident_of is None and second.incident_of == first.alert_id


def test_positions_are_presence_not_alerts(stack: Stack) -> None:
    ident = stack.add_osmand("traccar-pos")["osmand_id"]
    r = _form(stack, id=ident, lat=48.85, lon=2.35, timestamp=int(time.time()), batt=80)
    assert r.status_code == 200
    assert stack.alerts("traccar-pos") == []

    def updated() -> bool:
        with Session(stack.db) as s:
            d = s.get(Device, "traccar-pos")
            return d is not None and d.last_lat == 48.85 and d.batt == 80 and d.online

    wait_until(updated, 30, "presence flushed")


def test_v9_json_body(stack: Stack) -> None:
    ident = stack.add_osmand("traccar-v9")["osmand_id"]
    location = {
        "timestamp": "2026-12-02T10:00:00.000Z",
        "coords": {"latitude": 44.84, "longitude": -0.58, "accuracy": 8, "speed": 0},
        "battery": {"level": 0.42, "is_charging": True},
        "extras": {"alarm": "sos"},
        "is_moving": False,
    }
    r = _json(stack, {"location": location, "device_id": ident})
    assert r.status_code == 200, r.text
    (a,) = stack.alerts("traccar-v9")
    assert a.kind == "sos" and a.batt == 42 and (a.pos_lat, a.pos_lon) == (44.84, -0.58)
    # A v9 position without alarm: no alert.
    location.pop("extras")
    location["timestamp"] = "2026-12-02T10:01:00Z"
    assert _json(stack, {"location": location, "device_id": ident}).status_code == 200
    assert len(stack.alerts("traccar-v9")) == 1


def _event(
    ident: str, type_: str, alarm: str | None = None, fix: str = "2026-12-02T11:00:00Z"
) -> dict[str, Any]:
    return {
        "event": {
            "id": 7, "type": type_, "eventTime": fix, "deviceId": 3,
            "attributes": {"alarm": alarm} if alarm else {},
        },
        "position": {
            "latitude": 47.21, "longitude": -1.55, "accuracy": 0.0, "fixTime": fix,
            "attributes": {"batteryLevel": 55},
        },
        "device": {"id": 3, "name": "Pendentif", "uniqueId": "861234567890123",
                   "attributes": {"vigie_id": ident}},
    }  # fmt: skip


def test_traccar_event_forwarding(stack: Stack) -> None:
    ident = stack.add_osmand("traccar-fwd")["osmand_id"]
    assert _json(stack, _event(ident, "alarm", "sos")).status_code == 200
    assert (
        _json(stack, _event(ident, "alarm", "fallDown", "2026-12-02T11:05:00Z")).status_code == 200
    )
    kinds = [a.kind for a in stack.alerts("traccar-fwd")]
    assert kinds == ["sos", "fall"]
    assert stack.alerts("traccar-fwd")[0].batt == 55
    # Other alarms and events are not alerts; deviceOffline is presence.
    assert (
        _json(stack, _event(ident, "alarm", "overspeed", "2026-12-02T11:06:00Z")).status_code == 200
    )
    assert (
        _json(stack, _event(ident, "deviceOffline", None, "2026-12-02T11:07:00Z")).status_code
        == 200
    )
    assert len(stack.alerts("traccar-fwd")) == 2

    def offline() -> bool:
        with Session(stack.db) as s:
            d = s.get(Device, "traccar-fwd")
            return d is not None and d.online is False and d.last_seen_at is not None

    wait_until(offline, 30, "offline flushed")


def test_unknown_identifier_is_404_and_counted(stack: Stack) -> None:
    before = stack.server.metric("vigie_osmand_unknown_ids_total")
    r = _form(stack, id="12345678", lat=45, lon=4, alarm="sos")
    assert r.status_code == 404
    r = _json(stack, _event("not-registered", "alarm", "sos"))
    assert r.status_code == 404
    assert stack.server.metric("vigie_osmand_unknown_ids_total") == before + 2


def test_positions_are_rate_limited_per_identifier_alarms_never(stack: Stack) -> None:
    a = stack.add_osmand("traccar-rate-a")["osmand_id"]
    b = stack.add_osmand("traccar-rate-b")["osmand_id"]
    codes = [
        _form(stack, id=a, lat=45, lon=4, timestamp=1_700_000_000 + i).status_code for i in range(7)
    ]
    assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
    assert stack.server.metric("vigie_osmand_rate_limited_total") >= 2
    # Another identifier has its own allowance.
    assert _form(stack, id=b, lat=45, lon=4).status_code == 200
    # An alarm is never refused for its rate.
    assert (
        _form(stack, id=a, lat=45, lon=4, timestamp=int(time.time()), alarm="sos").status_code
        == 200
    )
    assert len(stack.alerts("traccar-rate-a")) == 1


@pytest.mark.parametrize(
    ("body", "content_type", "named"),
    [
        ("lat=45&lon=4", "application/x-www-form-urlencoded", "id"),
        ("id=x&lat=91&lon=4", "application/x-www-form-urlencoded", "lat"),
        ("id=x&lat=45&lon=abc", "application/x-www-form-urlencoded", "lon"),
        ("id=x&lat=45&lon=4&timestamp=hier", "application/x-www-form-urlencoded", "timestamp"),
        ('[{"id": "x"}]', "application/json", "tableau"),
        ('{"location": ', "application/json", "JSON"),
        ('{"foo": 1}', "application/json", "location"),
    ],
)
def test_unreadable_requests_get_400_in_french(
    stack: Stack, body: str, content_type: str, named: str
) -> None:
    r = httpx.post(_url(stack), content=body, headers={"content-type": content_type}, timeout=30)
    assert r.status_code == 400
    assert r.text.startswith("requête illisible") and named in r.text


def test_an_alarm_with_a_bad_field_is_kept_without_it(stack: Stack) -> None:
    ident = stack.add_osmand("traccar-badpos")["osmand_id"]
    r = _form(stack, id=ident, lat=91, lon=4, timestamp=int(time.time()), alarm="sos")
    assert r.status_code == 200
    (a,) = stack.alerts("traccar-badpos")
    assert a.pos_lat is None or a.pos_src != "gps"


def test_an_alert_not_committed_is_not_200_and_its_retry_is_one_alert(stack: Stack) -> None:
    ident = stack.add_osmand("traccar-dbfail")["osmand_id"]
    fields = dict(id=ident, lat=45.76, lon=4.83, timestamp=int(time.time()), alarm="sos")
    with database_locked(stack):
        r = _form(stack, **fields)
        assert r.status_code == 503  # the client knows it failed (and may retry)
    # The database is back: the queued alert is committed, and the retry finds it.
    codes: list[int] = []

    def retried() -> bool:
        codes.append(_form(stack, **fields).status_code)
        return codes[-1] == 200

    wait_until(retried, 60, "retry answered 200")
    assert len(stack.alerts("traccar-dbfail")) == 1
    threading.Event().wait(0.5)
    assert len(stack.alerts("traccar-dbfail")) == 1
