"""The whole chain, each story end to end: a device presses its button on a real broker, the
real server stores, geolocates and routes it, the official ``twilio`` client calls a fake
Twilio, the referent answers by SMS or key press, and the device hears that help is coming.
Any SMS or call nobody expected fails the test."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from alert_server.alerts.models import Alert, AlertDepartement
from alert_server.db import make_engine
from tests.fakes.fake_twilio import FakeTwilio
from tests.support import Device, ServerProcess, add_device, alert_payload, server_env, wait_until
from vigie.brokers.mosquitto import LocalMosquitto, free_port

DDSP13 = "+33465710013"
GN84 = "+33465710084"
NATIONAL = "+33199000000"
WORKER = "+33612345678"

DIRECTORY = f"""\
version: 1
departements:
  "13":
    PN:
      - name: "Référent santé DDSP 13"
        phone: "{DDSP13}"
  "84":
    GN:
      - name: "Référent santé groupement 84"
        phone: "{GN84}"
national_fallback:
  - name: "Permanence nationale"
    phone: "{NATIONAL}"
escalation:
  steps:
    - {{after_s: 0, contact: 1, channels: [sms]}}
    - {{after_s: 3, contact: 1, channels: [voice]}}
    - {{after_s: 60, contact: 2, channels: [sms]}}
  repeat: 0
"""


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'vigie.db'}"


@pytest.fixture
def geo_subset(geo_dir: Path, tmp_path: Path) -> Path:
    """Only the départements layer (routing needs no more; importing communes takes ~10 s)."""
    d = tmp_path / "geo"
    d.mkdir()
    (d / "departements-avec-outre-mer.geojson").symlink_to(
        geo_dir / "departements-avec-outre-mer.geojson"
    )
    return d


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    fake = FakeTwilio().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def stack(
    broker: LocalMosquitto, db_url: str, tmp_path: Path, twilio: FakeTwilio, geo_subset: Path
) -> Iterator[tuple[ServerProcess, Device]]:
    directory = tmp_path / "referents.yaml"
    directory.write_text(DIRECTORY, encoding="utf-8")
    port = free_port()
    env = server_env(
        broker,
        db_url,
        VIGIE_GEO_DIR=str(geo_subset),
        VIGIE_REFERENTS_FILE=str(directory),
        VIGIE_TELEPHONY="twilio",
        VIGIE_TWILIO_ACCOUNT_SID=twilio.account_sid,
        VIGIE_TWILIO_AUTH_TOKEN=twilio.auth_token,
        VIGIE_TWILIO_FROM=twilio.from_number,
        VIGIE_TWILIO_API_BASE=twilio.url,
        VIGIE_PUBLIC_URL=f"http://127.0.0.1:{port}",
    )
    twilio.webhook_base = f"http://127.0.0.1:{port}"
    server = ServerProcess(env, tmp_path / "server.log", port=port).start()
    dev = Device("nurse-e2e", add_device(env, "nurse-e2e", worker="Inès Durand"), broker.port)
    assert dev.connect()
    try:
        yield server, dev
        twilio.phones.assert_no_unexpected()
    finally:
        dev.close()
        server.stop()


MARSEILLE = {"lat": 43.2965, "lon": 5.3698, "acc_m": 12, "src": "gps"}


def _code(body: str) -> str:
    m = re.search(r"OK (\d{3})", body)
    assert m, body
    return m.group(1)


def test_sos_acknowledged_by_sms_reply(
    stack: tuple[ServerProcess, Device], twilio: FakeTwilio, db_url: str
) -> None:
    _server, dev = stack
    aid = str(uuid.uuid4())
    dev.publish("alert", alert_payload(aid, pos=MARSEILLE))
    sms = twilio.phones.expect_sms(DDSP13, contains=["SOS", "Inès", WORKER], timeout=10)
    assert "43.29650" in sms.body and sms.validity_period
    sms.deliver()  # "delivered" is not an acknowledgement
    time.sleep(0.3)
    assert not dev.received("alert.acknowledged", aid)
    sms.reply(f"ok  {_code(sms.body)}")
    wait_until(lambda: bool(dev.received("alert.acknowledged", aid)), 10, "alert.acknowledged")
    twilio.phones.expect_sms(DDSP13, contains=["pris en charge"], timeout=5)
    # The call planned at 3 s never happens: the escalation stopped.
    time.sleep(4)
    engine = make_engine(db_url)
    with Session(engine) as s:
        alert = s.exec(select(Alert).where(Alert.alert_id == aid)).one()
        assert alert.state == "acknowledged"
        assert alert.acknowledged_by == "Référent santé DDSP 13"
        assert alert.departement == "13" and alert.force == "PN"
    engine.dispose()


def test_no_reply_then_call_acknowledged_by_key_1(
    stack: tuple[ServerProcess, Device], twilio: FakeTwilio
) -> None:
    _server, dev = stack
    aid = str(uuid.uuid4())
    dev.publish("alert", alert_payload(aid, kind="sos_silent", pos=MARSEILLE))
    sms = twilio.phones.expect_sms(DDSP13, contains=["SOS discret"], timeout=10)
    sms.deliver()
    call = twilio.phones.expect_call(DDSP13, timeout=10)
    call.press("1")
    assert any("Inès" in said for said in call.said)
    wait_until(lambda: bool(dev.received("alert.acknowledged", aid)), 10, "alert.acknowledged")
    twilio.phones.expect_sms(DDSP13, contains=["pris en charge"], timeout=5)


def test_border_alert_notifies_both_departements(
    stack: tuple[ServerProcess, Device], twilio: FakeTwilio, db_url: str
) -> None:
    _server, dev = stack
    aid = str(uuid.uuid4())
    # On the Durance between Bouches-du-Rhône and Vaucluse, with a 2 km accuracy circle.
    dev.publish(
        "alert",
        alert_payload(aid, pos={"lat": 43.7335, "lon": 5.2400, "acc_m": 2000, "src": "cell"}),
    )
    first = twilio.phones.expect_sms(DDSP13, contains=["SOS"], timeout=10)
    twilio.phones.expect_sms(GN84, contains=["SOS"], timeout=10)
    # The first acknowledgement wins for both chains.
    first.reply(_code(first.body))
    wait_until(lambda: bool(dev.received("alert.acknowledged", aid)), 10, "alert.acknowledged")
    twilio.phones.expect_sms(DDSP13, contains=["pris en charge"], timeout=5)
    twilio.phones.expect_sms(GN84, contains=["DDSP 13"], timeout=5)
    engine = make_engine(db_url)
    with Session(engine) as s:
        deps = set(
            s.exec(select(AlertDepartement.departement).where(AlertDepartement.alert_id == aid))
        )
        alert = s.exec(select(Alert).where(Alert.alert_id == aid)).one()
    engine.dispose()
    assert deps == {"13", "84"}
    assert "ambiguous_border" in alert.flags


def test_cancel_pin_stands_down_and_duress_pin_keeps_escalating(
    stack: tuple[ServerProcess, Device], twilio: FakeTwilio
) -> None:
    _server, dev = stack
    cancelled, duress = str(uuid.uuid4()), str(uuid.uuid4())
    dev.publish("alert", alert_payload(cancelled, pos=MARSEILLE))
    twilio.phones.expect_sms(DDSP13, contains=["SOS"], timeout=10)
    dev.publish(
        "cancel", {"v": 1, "alert_id": cancelled, "ts": "2026-11-22T18:04:20Z", "pin": "1234"}
    )
    wait_until(lambda: bool(dev.received("alert.cancelled", cancelled)), 10, "cancelled")
    twilio.phones.expect_sms(DDSP13, contains=["annul"], timeout=5)

    dev.publish("alert", alert_payload(duress, pos=MARSEILLE))
    sms = twilio.phones.expect_sms(DDSP13, contains=["SOS"], timeout=10)
    dev.publish("cancel", {"v": 1, "alert_id": duress, "ts": "2026-11-22T18:04:20Z", "pin": "9999"})
    # The device sees exactly what a real cancel shows...
    wait_until(lambda: bool(dev.received("alert.cancelled", duress)), 10, "looks cancelled")
    # ...while the referent is told the worker is under duress, and the call still comes.
    twilio.phones.expect_sms(DDSP13, contains=["contrainte"], timeout=5)
    twilio.phones.expect_call(DDSP13, timeout=10).press("1")
    assert sms.body
    twilio.phones.expect_sms(DDSP13, contains=["pris en charge"], timeout=5)
