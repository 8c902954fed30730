"""Fixtures for the simulator: a real Mosquitto and a real ``vigie server`` (SQLite only:
the ingest tests already cover PostgreSQL, and the simulator does not touch the database),
shared where the tests do not break the broker, private where they do."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from alert_server.alerts.models import Alert
from alert_server.db import make_engine, write_scope
from alert_server.devices import service
from alert_server.users import service as users
from device_sim.device import BrokerTarget
from device_sim.geo import CommuneIndex
from device_sim.hooks import HttpApi
from device_sim.provision import DeviceSpec, wait_credentials_active
from device_sim.scenario import SERVER_FEATURES, RunEnv
from tests.support import ServerProcess, server_env
from vigie.brokers import files as broker_files
from vigie.brokers.mosquitto import LocalMosquitto
from vigie.timeutil import utcnow


class DbAlertStore:
    """The ``AlertStore`` hook read straight from the server's database (test stand-in for
    ``GET /api/alerts``)."""

    def __init__(self, db_url: str) -> None:
        self.engine = make_engine(db_url)

    def alerts(
        self, *, alert_id: str | None = None, device_id: str | None = None
    ) -> list[dict[str, Any]]:
        with Session(self.engine) as s:
            q = select(Alert)
            if alert_id is not None:
                q = q.where(Alert.alert_id == alert_id)
            if device_id is not None:
                q = q.where(Alert.device_id == device_id)
            return [
                {
                    "alert_id": a.alert_id,
                    "device_id": a.device_id,
                    "kind": a.kind,
                    "state": a.state,
                    "duress": a.duress,
                    "flags": list(a.flags),
                    "created_at": a.created_at,
                    "pos_src": a.pos_src,
                }
                for a in s.exec(q)
            ]

    def close(self) -> None:
        self.engine.dispose()


RESPONDER_USER = "sim-responder"
RESPONDER_PASSWORD = "responder-password-1"
SCENARIO_DIRECTORY = """\
version: 1
departements:
  "13":
    PN:
      - name: "Référent santé DDSP 13 (test)"
        phone: "+33465710013"
    GN:
      - name: "Référent santé groupement 13 (test)"
        phone: "+33465710213"
national_fallback:
  - name: "Permanence nationale (test)"
    phone: "+33199000000"
"""


@dataclass
class MosquittoControl:
    """``BrokerControl`` for outage scenarios: SIGKILL, then restart on the same ports."""

    broker: LocalMosquitto

    def stop(self) -> None:
        self.broker.kill()

    def start(self) -> None:
        self.broker.start()


@dataclass
class DirectProvisioner:
    """What ``vigie devices add`` does (worker + PIN hashes in the database, account in the
    broker's password file, reload), in-process: a subprocess per device costs ~1 s of
    interpreter start-up. ``VigieCliProvisioner`` itself is exercised by the CLI tests."""

    db_url: str
    broker: LocalMosquitto
    registers_workers: bool = True

    def provision(self, spec: DeviceSpec) -> str:
        new = service.NewDevice(
            spec.device_id, spec.worker or f"Worker {spec.device_id}", spec.role, spec.phone,
            spec.pin, spec.duress_pin, spec.site_lat, spec.site_lon, spec.site_label,
        ).validate()  # fmt: skip
        engine = make_engine(self.db_url)
        try:
            for attempt in range(10):
                try:
                    with write_scope(engine) as session:
                        service.add_device(session, new=new, now=utcnow())
                    break
                except OperationalError:
                    # SQLite WAL: a deferred transaction that reads, then writes after the
                    # server committed (presence flush), fails at once with "database is
                    # locked" (SQLITE_BUSY_SNAPSHOT; the busy timeout does not apply).
                    if attempt == 9:
                        raise
                    time.sleep(0.05)
        finally:
            engine.dispose()
        password = broker_files.generate_password()
        broker_files.set_password(self.broker.passwd_file, spec.device_id, password)
        self.broker.reload()
        # SIGHUP is handled asynchronously: wait until the broker accepts the new account.
        assert wait_credentials_active("127.0.0.1", self.broker.port, spec.device_id, password)
        return password


@dataclass
class Stack:
    broker: LocalMosquitto
    env: dict[str, str]
    server: ServerProcess
    db_url: str
    store: DbAlertStore
    responder: HttpApi | None = None

    def run_env(self, **kwargs: Any) -> RunEnv:
        defaults: dict[str, Any] = {
            "broker": BrokerTarget(port=self.broker.port),
            "provisioner": DirectProvisioner(self.db_url, self.broker),
            # Everything the server implements; a dispatcher account acknowledges through the
            # HTTP API (the "responder").
            "features": set(SERVER_FEATURES),
            "store": self.store,
            "responder": self.responder,
            "observer_url": self.broker.server_url(),
        }
        defaults.update(kwargs)
        return RunEnv(**defaults)

    def add_device(self, device_id: str, **spec: Any) -> str:
        return DirectProvisioner(self.db_url, self.broker).provision(DeviceSpec(device_id, **spec))


def _stack(tmp: Path) -> Iterator[Stack]:
    if not LocalMosquitto.available():
        pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
    broker = LocalMosquitto(tmp / "broker").start()
    db_url = f"sqlite:///{tmp / 'vigie.db'}"
    directory = tmp / "referents.yaml"
    directory.write_text(SCENARIO_DIRECTORY, encoding="utf-8")
    env = server_env(
        broker,
        db_url,
        VIGIE_REFERENTS_FILE=str(directory),
        # Short timings so that timed visits and automatic-alarm checks run in seconds.
        VIGIE_SESSION_GRACE_S='{"nurse": 3, "pharmacist": 3, "other": 3}',
        VIGIE_SESSION_TICK_S="0.5",
        VIGIE_VERIFY_AUTOMATIC_S="3",
    )
    server = ServerProcess(env, tmp / "server.log").start()
    store = DbAlertStore(db_url)
    engine = make_engine(db_url)
    with write_scope(engine) as session:
        users.add_account(
            session,
            new=users.validate_new_account(RESPONDER_USER, RESPONDER_PASSWORD, "admin", None),
            now=utcnow(),
        )
    engine.dispose()
    responder = HttpApi(server.url, RESPONDER_USER, RESPONDER_PASSWORD)
    try:
        yield Stack(broker, env, server, db_url, store, responder)
    finally:
        store.close()
        server.stop()
        broker.stop()


@pytest.fixture(scope="session")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Broker + server shared by the simulator tests that never stop the broker (each uses
    its own device ids)."""
    yield from _stack(tmp_path_factory.mktemp("sim-stack"))


@pytest.fixture(scope="session")
def outage_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Broker + server for the tests that crash and restart the broker (each leaves it
    running again), kept apart from ``shared_stack``."""
    yield from _stack(tmp_path_factory.mktemp("sim-outage"))


@pytest.fixture(scope="session")
def communes() -> CommuneIndex:
    from tests.conftest import GEO_DIR

    path = GEO_DIR / "communes-index.csv"
    if not path.is_file():
        pytest.fail(f"{path} not found: set VIGIE_GEO_DIR")
    return CommuneIndex.load(path)
