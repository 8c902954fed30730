"""``vigie devices import FICHIER.csv``: many devices in one process, all or nothing; each bad
line named in French with its column; credentials printed once (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import Session, select

from alert_server.db import make_engine
from alert_server.devices.bulk import BulkImportError, parse_devices
from alert_server.devices.models import Device, Worker
from alert_server.devices.service import pin_matches
from alert_server.gateways.osmand import Identities
from alert_server.users.models import AuditRecord
from tests.support import REPO, vigie
from vigie.brokers import files as broker_files

HEADER = "device_id,worker,role,phone,pin,duress_pin,site_lat,site_lon,site_label,gateway"
GOOD = [
    "nurse-001,Inès Durand,nurse,+33612345678,2468,1357,,,,",
    "nurse-002,Léa Martin,nurse,+33 6 12 34 56 79,8642,7531,,,,mqtt",
    'pharma-001,Paul Roux,pharmacist,+33491000001,1111,2222,43.2965,5.3698,"Pharmacie du Port, '
    'comptoir",',
    "traccar-001,Sofia Garnier,nurse,+33612000007,2468,1357,,,,osmand",
    "traccar-002,Nadia Benali,other,+33612000008,2468,1357,,,,OsmAnd",
]


def _file(*lines: str) -> str:
    return "\n".join([HEADER, *lines]) + "\n"


def _errors(text: str) -> list[str]:
    with pytest.raises(BulkImportError) as exc:
        parse_devices(text, "flotte.csv")
    return exc.value.errors


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("bad id!,A,nurse,+33612345678,2468,1357,,,,", "colonne device_id : 'bad id!' doit"),
        ("vigie-server-2,A,nurse,+33612345678,2468,1357,,,,", "colonne device_id : "),
        ("n-1, ,nurse,+33612345678,2468,1357,,,,", "colonne worker : le nom ne peut pas"),
        ("n-1,A,doctor,+33612345678,2468,1357,,,,", "colonne role : 'doctor' n'est pas l'un"),
        ("n-1,A,nurse,0612,2468,1357,,,,", "colonne phone : '0612' n'est pas"),
        ("n-1,A,nurse,+33612345678,12,1357,,,,", "colonne pin : le code doit faire 4 à 8"),
        ("n-1,A,nurse,+33612345678,2468,2468,,,,", "colonne duress_pin : doit être différent"),
        ("n-1,A,nurse,+33612345678,2468,1357,43.3,,,", "colonne site_lat/site_lon : donner"),
        ("n-1,A,nurse,+33612345678,2468,1357,nord,5,,", "colonne site_lat : 'nord' n'est pas un"),
        ("n-1,A,nurse,+33612345678,2468,1357,91,5,,", "colonne site_lat : 91.0 hors de"),
        ("n-1,A,nurse,+33612345678,2468,1357,,,,lora", "colonne gateway : 'lora' n'est pas"),
        ("n-1,A,nurse,+33612345678,2468,1357", "6 champs au lieu de 10 (en-tête ligne 1)"),
    ],
)
def test_each_bad_line_is_named_with_its_column_in_french(line: str, says: str) -> None:
    # The bad line is the third of the file: after the header and a good one.
    errors = _errors(_file(GOOD[0], line))
    assert len(errors) == 1 and errors[0].startswith("flotte.csv:3: " + says), errors


def test_every_problem_is_listed_at_once() -> None:
    errors = _errors(_file(GOOD[0], "n-1,A,nurse,0612,2468,1357,,,,", "", GOOD[0]))
    assert errors[0].startswith("flotte.csv:3: colonne phone")
    # A blank line is skipped, and counted: the repeat is on line 5.
    assert errors[1] == "flotte.csv:5: colonne device_id : 'nurse-001' déjà présent ligne 2"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "flotte.csv:1: fichier vide"),
        ("device_id,worker,role,phone,pin\nn-1,A,nurse,+33612345678,2468\n",
         "flotte.csv:1: colonne « duress_pin » manquante"),
        (HEADER + ",colour\n", "flotte.csv:1: colonne inconnue « colour »"),
        (HEADER + ",pin\n", "flotte.csv:1: colonne « pin » en double"),
        (HEADER + "\n\n", "flotte.csv:1: aucun boîtier"),
    ],
)  # fmt: skip
def test_bad_headers(text: str, says: str) -> None:
    assert _errors(text)[0].startswith(says)


def test_spreadsheet_exports_are_read() -> None:
    """A French spreadsheet: BOM, ";" separators, CRLF, decimal commas."""
    text = (
        "\ufeffdevice_id;worker;role;phone;pin;duress_pin;site_lat;site_lon\r\n"
        "pharma-9;Paul Roux;pharmacist;+33491000001;1111;2222;43,2965;5,3698\r\n"
    )
    (row,) = parse_devices(text, "flotte.csv")
    assert (row.new.device_id, row.new.site_lat, row.new.site_lon) == ("pharma-9", 43.2965, 5.3698)
    assert row.gateway == "mqtt" and row.line == 2


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
    e.update(
        VIGIE_DATABASE_URL=db_url,
        VIGIE_BROKER_PASSWD_FILE=str(tmp_path / "passwd"),
        VIGIE_BROKER_ACL_FILE=str(tmp_path / "acl"),
        VIGIE_PUBLIC_URL="https://vigie.example.fr",
    )
    return e


def _devices(db_url: str) -> list[str]:
    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            return sorted(d.device_id for d in s.exec(select(Device)))
    finally:
        engine.dispose()


def test_import_registers_every_device_once_and_prints_each_credential_once(
    env: dict[str, str], tmp_path: Path, db_url: str
) -> None:
    path = tmp_path / "flotte.csv"
    path.write_text(_file(*GOOD), encoding="utf-8")
    out = vigie(env, "devices", "import", str(path))
    assert out.returncode == 0, out.stderr
    assert "5 boîtiers enregistrés (3 MQTT, 2 OsmAnd)" in out.stderr
    printed = {r["device_id"]: r for r in csv.DictReader(io.StringIO(out.stdout))}
    assert sorted(printed) == _devices(db_url) == sorted(line.split(",")[0] for line in GOOD)
    # MQTT devices: their accounts are in the broker's password file, with the printed password.
    accounts = broker_files.read_passwd(tmp_path / "passwd")
    assert sorted(accounts) == ["nurse-001", "nurse-002", "pharma-001"]
    for device_id, entry in accounts.items():
        assert printed[device_id]["mqtt_username"] == device_id
        assert broker_files.verify_mosquitto_hash(printed[device_id]["mqtt_password"], entry)
        assert printed[device_id]["osmand_id"] == ""
    # OsmAnd devices: a long random identifier that the gateway resolves to the device.
    engine = make_engine(db_url)
    try:
        identities = Identities(engine)
        for device_id in ("traccar-001", "traccar-002"):
            row = printed[device_id]
            assert row["mqtt_password"] == "" and len(row["osmand_id"]) >= 40
            assert row["server_url"] == "https://vigie.example.fr/gateway/osmand"
            assert identities.device_for(row["osmand_id"]) == device_id
        with Session(engine) as s:
            workers = {w.name: w for w in s.exec(select(Worker))}
            pharma = s.get(Device, "pharma-001")
            audit = list(s.exec(select(AuditRecord)))
        # PINs hashed (each its own salt), phones in E.164, the site kept.
        ines, lea = workers["Inès Durand"], workers["Léa Martin"]
        assert pin_matches("2468", ines.pin_hash) and pin_matches("1357", ines.duress_pin_hash)
        assert not pin_matches("2468", ines.duress_pin_hash)
        assert lea.phone == "+33612345679"
        assert pharma is not None and pharma.site_label == "Pharmacie du Port, comptoir"
        assert (pharma.site_lat, pharma.site_lon) == (43.2965, 5.3698)
        # One audit row per device, from the command line.
        assert sorted((r.action, r.target) for r in audit) == sorted(
            ("device.add", d) for d in printed
        )
        assert all(r.actor and r.actor.startswith("cli:") for r in audit)
    finally:
        engine.dispose()


def test_a_device_already_registered_stops_the_whole_import(
    env: dict[str, str], tmp_path: Path, db_url: str
) -> None:
    first = tmp_path / "premier.csv"
    first.write_text(_file(GOOD[1]), encoding="utf-8")
    assert vigie(env, "devices", "import", str(first)).returncode == 0
    accounts_before = broker_files.read_passwd(tmp_path / "passwd")
    # The JSON output and standard input, for a script.
    second = _file(GOOD[0], GOOD[3], GOOD[1], GOOD[2])
    out = _vigie_stdin(env, second, "devices", "import", "-", "--json")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[0] == (
        "vigie: erreur: <entrée standard>:4: colonne device_id : 'nurse-002' existe déjà (actif)"
    )
    assert lines[-1] == "vigie: rien n'a été enregistré."
    assert out.stdout == ""
    # Nothing of the others: no device, no broker account.
    assert _devices(db_url) == ["nurse-002"]
    assert broker_files.read_passwd(tmp_path / "passwd") == accounts_before
    # Fixed, the same file goes through, as JSON in the shape of `devices add --json`.
    out = _vigie_stdin(env, _file(GOOD[0], GOOD[3]), "devices", "import", "-", "--json")
    assert out.returncode == 0, out.stderr
    mqtt, osm = json.loads(out.stdout)
    assert set(mqtt) == {"device_id", "mqtt_username", "mqtt_password"}
    assert set(osm) == {"device_id", "osmand_id", "server_url"}


def test_unwritable_broker_file_registers_nothing(
    env: dict[str, str], tmp_path: Path, db_url: str
) -> None:
    env = dict(env, VIGIE_BROKER_PASSWD_FILE="/proc/vigie-cannot-write/passwd")
    path = tmp_path / "flotte.csv"
    path.write_text(_file(*GOOD), encoding="utf-8")
    out = vigie(env, "devices", "import", str(path))
    assert out.returncode == 2 and "fichiers du broker" in out.stderr, out.stderr
    assert "rien n'a été enregistré" in out.stderr
    assert _devices(db_url) == []


def test_an_unreadable_file_is_named(env: dict[str, str], tmp_path: Path) -> None:
    out = vigie(env, "devices", "import", str(tmp_path / "absent.csv"))
    assert out.returncode == 2
    assert out.stderr.startswith(f"vigie: erreur: {tmp_path / 'absent.csv'}: illisible")


def _vigie_stdin(env: dict[str, str], text: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alert_server.cli", *args],
        env=env,
        input=text,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,  # a deadline, not a measure
    )
