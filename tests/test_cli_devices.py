"""``vigie devices``: bad input names what is wrong, exits 2, and writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine
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
    # No broker runs here (no VIGIE_BROKER_PID_FILE): revoked in the database and in the
    # files, but the command says the broker was not told (exit 1, tests/test_cli_revoke.py).
    revoked = vigie(env, "devices", "revoke", "nurse-1")
    assert revoked.returncode == 1 and "le broker n'a pas été prévenu" in revoked.stderr
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


def test_list_reads_what_the_models_write(env: dict[str, str], engine: Engine, db_url: str) -> None:
    """``devices list`` reads the tables reflected from the database, not through the models
    (alert_server.devices.listing): every field it shows is the one the models wrote."""
    # Read back in UTC with its offset, as through the models (SQLModel's UTCDateTime).
    seen = datetime(2026, 3, 1, 9, 30, 15, tzinfo=timezone(timedelta(hours=1)))
    with Session(engine) as s:
        for i, (name, role) in enumerate([("Inès Durand", "nurse"), ("Paul Roux", "pharmacist")]):
            s.add(Worker(id=i + 1, name=name, role=role, phone=f"+3361234567{i}", pin_hash="x",
                         duress_pin_hash="y", created_at=seen))  # fmt: skip
        s.flush()
        s.add(Device(device_id="b-online", worker_id=1, mqtt_username="b-online",
                     created_at=seen, online=True, last_seen_at=seen, batt=80,
                     site_label="Pharmacie du Port"))  # fmt: skip
        s.add(Device(device_id="a-revoked", worker_id=2, mqtt_username="a-revoked",
                     created_at=seen, online=True, revoked_at=seen))  # fmt: skip
        s.add(Device(device_id="c-never", worker_id=2, mqtt_username="c-never", created_at=seen))
        s.commit()
    listed = json.loads(vigie(env, "devices", "list", "--json").stdout)
    assert listed == [
        {"device_id": "a-revoked", "worker": "Paul Roux", "role": "pharmacist",
         "phone": "+33612345671", "state": "revoked", "last_seen_at": None, "batt": None,
         "site_label": None},
        {"device_id": "b-online", "worker": "Inès Durand", "role": "nurse",
         "phone": "+33612345670", "state": "online", "last_seen_at": "2026-03-01T08:30:15+00:00",
         "batt": 80, "site_label": "Pharmacie du Port"},
        {"device_id": "c-never", "worker": "Paul Roux", "role": "pharmacist",
         "phone": "+33612345671", "state": "offline", "last_seen_at": None, "batt": None,
         "site_label": None},
    ]  # fmt: skip
    lines = vigie(env, "devices", "list").stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["a-revoked", "b-online", "c-never"]
    assert "révoqué" in lines[0] and "batterie -" in lines[0] and "vu jamais" in lines[0]
    assert "en ligne" in lines[1] and "batterie 80 %" in lines[1]
    assert lines[1].endswith("vu 2026-03-01T08:30:15+00:00")
    assert "hors ligne" in lines[2]


def test_list_imports_neither_the_models_nor_alembic(env: dict[str, str], engine: Engine) -> None:
    """On a migrated database (every use but the first), ``devices list`` reads without
    SQLModel, the ORM, the models, Alembic or phonenumbers (what made it slow to start)."""
    code = (
        "import sys\n"
        "from alert_server.cli import app\n"
        "try:\n"
        "    app(['devices', 'list'], prog_name='vigie')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('sqlmodel', 'sqlalchemy.orm', 'alembic', 'phonenumbers',\n"
        "                           'alert_server.devices.models') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "Aucun boîtier enregistré." in out.stdout
    assert "HEAVY=\n" in out.stdout, out.stdout
