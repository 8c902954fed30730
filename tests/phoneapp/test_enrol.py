"""One-time enrolment codes (operations.md 1.1): 24 h, single use, French reasons, a new MQTT
password for the device on every enrolment, nothing for a revoked device. The clock is a
parameter, so expiry is tested without waiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from alert_server.cli import app as cli_app
from alert_server.db import write_scope
from alert_server.devices import enrol, service
from alert_server.phoneapp.cli import terminal_qr
from vigie.brokers import files as broker_files

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def _device(engine: Engine, device_id: str = "phone-1") -> None:
    with write_scope(engine) as s:
        service.add_device(
            s,
            new=service.NewDevice(device_id, "Inès", "nurse", "+33612345678", "1234", "9999"),
            now=T0,
        )


def _issue(engine: Engine, device_id: str = "phone-1", now: datetime = T0) -> enrol.Issued:
    with write_scope(engine) as s:
        return enrol.issue(s, device_id=device_id, public_url="https://vigie.example/", now=now)


def _spend(engine: Engine, code: str, now: datetime) -> str:
    with write_scope(engine) as s:
        return enrol.spend(s, code=code, now=now)


def test_a_code_works_once_within_24_hours(engine: Engine) -> None:
    _device(engine)
    issued = _issue(engine)
    assert issued.enrol_url == f"https://vigie.example/app/enrol?code={issued.code}"
    assert issued.expires_at == T0 + timedelta(hours=24)
    assert _spend(engine, issued.code, T0 + timedelta(hours=23, minutes=59)) == "phone-1"
    with pytest.raises(enrol.EnrolmentError) as used:
        _spend(engine, issued.code, T0 + timedelta(hours=1))
    assert used.value.status == 410 and "déjà servi" in used.value.message


def test_expired_unknown_and_revoked(engine: Engine) -> None:
    _device(engine)
    late = _issue(engine)
    with pytest.raises(enrol.EnrolmentError) as expired:
        _spend(engine, late.code, T0 + timedelta(hours=24))
    assert expired.value.status == 410 and "expiré" in expired.value.message
    with pytest.raises(enrol.EnrolmentError) as unknown:
        _spend(engine, "not-a-code", T0)
    assert unknown.value.status == 404 and "n'existe pas" in unknown.value.message
    pending = _issue(engine)
    with write_scope(engine) as s:
        service.revoke_device(s, device_id="phone-1", now=T0)
    with pytest.raises(enrol.EnrolmentError) as revoked:
        _spend(engine, pending.code, T0)
    assert revoked.value.status == 403 and "révoqué" in revoked.value.message
    with pytest.raises(enrol.EnrolmentError):
        _issue(engine)
    # The refusal rolled back: the code is still unspent (not reported as "déjà servi").
    with pytest.raises(enrol.EnrolmentError) as again:
        _spend(engine, pending.code, T0)
    assert "révoqué" in again.value.message


def test_only_a_digest_of_the_code_is_stored(engine: Engine) -> None:
    _device(engine)
    issued = _issue(engine)
    with engine.connect() as conn:
        dumped = repr(conn.exec_driver_sql("SELECT * FROM enrolment_code").all())
    assert issued.code not in dumped


def test_credentials_are_a_new_password_in_the_broker_file(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    broker_files.set_password(passwd, "phone-1", "the-old-password")
    creds = enrol.give_credentials("phone-1", passwd_file=passwd, pid_file=None)
    encoded = broker_files.read_passwd(passwd)["phone-1"]
    assert broker_files.verify_mosquitto_hash(creds.mqtt_password, encoded)
    assert not broker_files.verify_mosquitto_hash("the-old-password", encoded)
    assert creds.mqtt_username == "phone-1"
    with pytest.raises(enrol.EnrolmentError) as unmanaged:
        enrol.give_credentials("phone-1", passwd_file=None, pid_file=None)
    assert unmanaged.value.status == 503


def test_cli_prints_the_link_and_a_qr_code(tmp_path: Path) -> None:
    env = {
        "VIGIE_DATABASE_URL": f"sqlite:///{tmp_path / 'v.db'}",
        "VIGIE_PUBLIC_URL": "https://vigie.example",
        "VIGIE_MQTT_WS_URL": "wss://mqtt.vigie.example:8084",
    }
    runner = CliRunner()
    add = [
        "devices", "add", "phone-1", "--worker", "Inès", "--role", "nurse",
        "--phone", "+33612345678", "--pin", "1234", "--duress-pin", "9999",
    ]  # fmt: skip
    assert runner.invoke(cli_app, add, env=env).exit_code == 0
    out = runner.invoke(cli_app, ["devices", "enrol", "phone-1"], env=env)
    assert out.exit_code == 0, out.output
    url = next(ln for ln in out.output.splitlines() if ln.startswith("https://"))
    assert url.startswith("https://vigie.example/app/enrol?code=")
    assert terminal_qr(url).splitlines()[1] in out.output  # the QR drawn in the terminal
    unknown = runner.invoke(cli_app, ["devices", "enrol", "ghost"], env=env)
    assert unknown.exit_code == 2 and "inconnu" in unknown.output
