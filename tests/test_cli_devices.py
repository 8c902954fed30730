"""``vigie devices``: bad input names what is wrong, exits 2, and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import Session, select

from alert_server.db import make_engine
from alert_server.devices.models import Device, Worker
from tests.support import vigie
from vigie.brokers import files as broker_files


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> dict[str, str]:
    import os

    e = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
    e.update(
        VIGIE_DATABASE_URL=db_url,
        VIGIE_BROKER_PASSWD_FILE=str(tmp_path / "passwd"),
        VIGIE_BROKER_ACL_FILE=str(tmp_path / "acl"),
    )
    return e


GOOD = ["--worker", "Inès Durand", "--role", "nurse", "--phone", "+33612345678",
        "--pin", "2468", "--duress-pin", "1357"]  # fmt: skip


def _with(flag: str, value: str) -> list[str]:
    args = list(GOOD)
    args[args.index(flag) + 1] = value
    return args


@pytest.mark.parametrize(
    ("device_id", "args", "names"),
    [
        ("bad id!", GOOD, "DEVICE_ID"),
        ("vigie-server", GOOD, "DEVICE_ID"),
        ("nurse-1", _with("--role", "doctor"), "--role"),
        ("nurse-1", _with("--phone", "0612"), "--phone"),
        ("nurse-1", _with("--pin", "12"), "--pin"),
        ("nurse-1", _with("--duress-pin", "2468"), "--duress-pin"),
        ("nurse-1", [*GOOD, "--site-lat", "43.3"], "--site-lat"),
        ("nurse-1", [*GOOD, "--site-lat", "91", "--site-lon", "5"], "--site-lat"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    env: dict[str, str], tmp_path: Path, db_url: str, device_id: str, args: list[str], names: str
) -> None:
    out = vigie(env, "devices", "add", device_id, *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0], out.stderr
    assert not (tmp_path / "passwd").exists()
    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            assert list(s.exec(select(Device))) == [] if _has_tables(engine) else True
    finally:
        engine.dispose()


def _has_tables(engine: object) -> bool:
    from sqlalchemy import inspect

    return "device" in inspect(engine).get_table_names()  # type: ignore[arg-type]


def test_add_list_revoke(env: dict[str, str], tmp_path: Path, db_url: str) -> None:
    out = vigie(env, "devices", "add", "nurse-1", *GOOD, "--site-lat", "43.29",
                "--site-lon", "5.57", "--site-label", "Pharmacie du Port", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    creds = json.loads(out.stdout)
    assert creds["device_id"] == creds["mqtt_username"] == "nurse-1"
    assert len(creds["mqtt_password"]) >= 24
    entry = broker_files.read_passwd(tmp_path / "passwd")["nurse-1"]
    assert broker_files.verify_mosquitto_hash(creds["mqtt_password"], entry)
    # PINs are stored hashed.
    engine = make_engine(db_url)
    with Session(engine) as s:
        w = s.exec(select(Worker)).one()
        assert "2468" not in w.pin_hash and w.pin_hash.startswith("$argon2")
    engine.dispose()
    dup = vigie(env, "devices", "add", "nurse-1", *GOOD)
    assert dup.returncode == 2 and "existe déjà" in dup.stderr
    listed = json.loads(vigie(env, "devices", "list", "--json").stdout)
    assert [(r["device_id"], r["state"]) for r in listed] == [("nurse-1", "offline")]
    assert vigie(env, "devices", "revoke", "nurse-1").returncode == 0
    assert "nurse-1" not in broker_files.read_passwd(tmp_path / "passwd")
    assert broker_files.read_revoked(tmp_path / "acl") == ["nurse-1"]
    listed = json.loads(vigie(env, "devices", "list", "--json").stdout)
    assert listed[0]["state"] == "revoked"
    unknown = vigie(env, "devices", "revoke", "nobody")
    assert unknown.returncode == 2 and "inconnu" in unknown.stderr


def test_unwritable_broker_file_registers_nothing(env: dict[str, str], db_url: str) -> None:
    env = dict(env, VIGIE_BROKER_PASSWD_FILE="/proc/vigie-cannot-write/passwd")
    out = vigie(env, "devices", "add", "nurse-2", *GOOD)
    assert out.returncode == 2 and "fichiers du broker" in out.stderr
    engine = make_engine(db_url)
    with Session(engine) as s:
        assert list(s.exec(select(Device))) == []
    engine.dispose()


def test_victim_support_opt_out(env: dict[str, str], db_url: str) -> None:
    from alert_server.followup.victim_support import opted_out

    assert vigie(env, "devices", "add", "nurse-9", *GOOD).returncode == 0
    off = vigie(env, "devices", "victim-support", "nurse-9", "--off")
    assert off.returncode == 0 and "ne recevra pas" in off.stdout
    engine = make_engine(db_url)
    with Session(engine) as s:
        w = s.exec(select(Worker)).one()
        assert w.id is not None and opted_out(s, w.id)
    assert vigie(env, "devices", "victim-support", "nurse-9", "--on").returncode == 0
    with Session(engine) as s:
        assert w.id is not None and not opted_out(s, w.id)
    engine.dispose()
    unknown = vigie(env, "devices", "victim-support", "nobody", "--off")
    assert unknown.returncode == 2 and "inconnu" in unknown.stderr
