"""One real stack for the gateway tests (per database): Mosquitto from broker_config/, a
database, a referent directory, three registered MQTT buttons with their sites, the buttons
file, and ``vigie server`` in a subprocess. Shared by the OsmAnd and button tests (one server
start per database, not one per test)."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from alert_server.alerts.models import Alert
from alert_server.db import make_engine, migrate, write_scope
from alert_server.devices.service import NewDevice, add_device
from alert_server.gateways import osmand
from tests.conftest import PG_ADMIN_DSN, _pg_url
from tests.support import ServerProcess, server_env, vigie
from vigie.brokers import files as broker_files
from vigie.brokers.mosquitto import LocalMosquitto
from vigie.timeutil import utcnow

DIRECTORY = """\
version: 1
departements: {}
national_fallback:
  - name: "Permanence nationale"
    phone: "+33465710013"
escalation:
  steps:
    - {after_s: 0, contact: 1, channels: [sms]}
  repeat: 0
"""

# Registered devices with a site (the pharmacy), one per button kind.
BUTTONS = {
    "pharma-shelly": ("shellies/shellybutton1-A1B2C3/input_event/0", {"event": ["S", "L"]}),
    "pharma-zigbee": ("zigbee2mqtt/bouton-comptoir", {"action": ["single", "emergency"]}),
    "pharma-tasmota": ("stat/bouton-reserve/RESULT", {"Button1.Action": ["SINGLE", "HOLD"]}),
}
SITE = (43.2965, 5.3698, "Pharmacie du Vieux-Port")


def buttons_yaml() -> str:
    lines = ["version: 1", "buttons:"]
    for device_id, (topic, match) in BUTTONS.items():
        lines += [
            f"  - device_id: {device_id}",
            f'    topic: "{topic}"',
            f"    match: {json.dumps(match)}",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class Stack:
    broker: LocalMosquitto
    env: dict[str, str]
    server: ServerProcess
    db: Engine
    db_url: str
    dir: Path
    # MQTT passwords of the button devices (their accounts publish the buttons' topics).
    passwords: dict[str, str]

    def alerts(self, device_id: str) -> list[Alert]:
        with Session(self.db) as s:
            stmt = select(Alert).where(Alert.device_id == device_id).order_by(Alert.id)  # type: ignore[arg-type]
            return list(s.exec(stmt))

    def add_osmand(self, device_id: str) -> dict[str, str]:
        """Registered in-process (the CLI's own output is tested once, by ``add_osmand_cli``)."""
        with write_scope(self.db) as session:
            new = NewDevice(
                device_id, f"Worker {device_id}", "nurse", "+33612345678", "1234", "9999"
            )
            add_device(session, new=new, now=utcnow())
            ident = osmand.register(session, device_id=device_id, now=utcnow())
        return {"device_id": device_id, "osmand_id": ident}

    def add_osmand_cli(self, device_id: str) -> dict[str, str]:
        out = vigie(
            self.env,
            "devices", "add", device_id,
            "--worker", f"Worker {device_id}", "--role", "nurse", "--phone", "+33612345678",
            "--pin", "1234", "--duress-pin", "9999", "--gateway", "osmand", "--json",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))


@contextmanager
def _new_stack(database: str, root: Path) -> Iterator[Stack]:
    if not LocalMosquitto.available():
        pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
    pg_name = None
    if database == "sqlite":
        db_url = f"sqlite:///{root / 'vigie.db'}"
    else:
        pg_name = f"vigie_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        db_url = _pg_url(pg_name)
    broker = LocalMosquitto(root / "broker")
    server: ServerProcess | None = None
    db = make_engine(db_url)
    try:
        broker.prepare()
        directory = root / "referents.yaml"
        directory.write_text(DIRECTORY, encoding="utf-8")
        buttons = root / "buttons.yaml"
        buttons.write_text(buttons_yaml(), encoding="utf-8")
        env = server_env(
            broker,
            db_url,
            VIGIE_REFERENTS_FILE=str(directory),
            VIGIE_BUTTONS_FILE=str(buttons),
            VIGIE_BROKER_SERVERS_ACL_FILE=str(broker.servers_acl_file),
            VIGIE_GATEWAY_COMMIT_TIMEOUT_S="3",
            VIGIE_OSMAND_BURST="5",
            VIGIE_OSMAND_RATE_PER_S="0.01",
            VIGIE_PUBLIC_URL="https://vigie.example.fr",
        )
        # Registered in-process (a CLI call costs seconds on a busy machine; the CLI's own
        # output is tested once): the device, its site, its MQTT account.
        migrate(db)
        passwords: dict[str, str] = {}
        for device_id in BUTTONS:
            with write_scope(db) as session:
                new = NewDevice(
                    device_id, "Officine du port", "pharmacist", "+33612345678", "1234", "9999",
                    SITE[0], SITE[1], SITE[2],
                )  # fmt: skip
                add_device(session, new=new, now=utcnow())
            passwords[device_id] = broker_files.generate_password()
            broker_files.set_password(broker.passwd_file, device_id, passwords[device_id])
        broker.start()
        server = ServerProcess(env, root / "server.log").start()
        yield Stack(broker, env, server, db, db_url, root, passwords)
    finally:
        if server is not None:
            server.stop()
        broker.stop()
        db.dispose()
        if pg_name is not None:
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The SQLite stack alone, for what does not depend on the database (the CLI's printed
    registration, the buttons file refused before the server starts). The same instance as
    ``stack``'s SQLite run: no server started for it."""
    with _new_stack("sqlite", tmp_path_factory.mktemp("gateways-sqlite")) as stack:
        yield stack


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """One stack per database (one server start each), shared by the OsmAnd and button tests."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_stack")
        return
    with _new_stack(request.param, tmp_path_factory.mktemp("gateways-postgresql")) as stack:
        yield stack


@contextmanager
def database_locked(stack: Stack) -> Iterator[None]:
    """No alert can be committed while this holds (SQLite: the write lock; PostgreSQL: the
    alert table)."""
    if stack.db_url.startswith("sqlite"):
        conn = sqlite3.connect(stack.db_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
    else:
        dsn = stack.db_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(dsn) as pg:
            pg.execute("LOCK TABLE alert IN ACCESS EXCLUSIVE MODE")
            try:
                yield
            finally:
                pg.rollback()
