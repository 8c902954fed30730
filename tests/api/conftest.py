"""An API stack: the real app (``create_app``) served by uvicorn in a thread, on SQLite or
PostgreSQL, with the MQTT side replaced by a recorder of what would be published."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlmodel import select

from alert_server.alerts import service as alerts_service
from alert_server.app import Runtime, create_app
from alert_server.db import migrate, write_scope
from alert_server.devices import service as devices_service
from alert_server.downlink import Downlink
from alert_server.settings import Settings
from alert_server.users import service as users_service
from alert_server.users.models import AuditRecord
from alert_server.users.schemas import NewAccount
from tests.fakes.app_server import ThreadedServer
from vigie.brokers.mosquitto import free_port
from vigie.timeutil import utcnow

SECRET = "test-secret-key-for-the-api-tests-0123456789"
PASSWORD = "mot de passe très long"


@dataclass
class ApiStack:
    url: str
    runtime: Runtime
    app: FastAPI
    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def add_user(
        self, username: str, role: str = "dispatcher", departements: tuple[str, ...] = ()
    ) -> str:
        with write_scope(self.runtime.engine) as s:
            users_service.add_account(
                s,
                new=NewAccount(username, PASSWORD, role, departements),
                now=utcnow(),
            )
        return PASSWORD

    def token(self, username: str, password: str = PASSWORD) -> str:
        with self.client() as c:
            r = c.post("/api/token", data={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def add_alert(
        self,
        departement: str | None,
        *,
        created_at: datetime | None = None,
        device_id: str = "nurse-001",
        **values: Any,
    ) -> str:
        alert_id = str(uuid.uuid4())
        at = created_at or utcnow()
        row = {
            "alert_id": alert_id,
            "device_id": device_id,
            "kind": "sos",
            "state": "open",
            "duress": False,
            "flags": [],
            "created_at": at,
            "raw": "{}",
            "departement": departement,
            "pos_lat": 43.2965,
            "pos_lon": 5.3698,
            "pos_acc_m": 25.0,
            "pos_src": "gps",
            **values,
        }
        with write_scope(self.runtime.engine) as s:
            alerts_service.insert_alert(s, values=row)
            alerts_service.add_event(s, alert_id=alert_id, at=at, type_="received", actor=device_id)
        return alert_id

    def add_device(self, device_id: str, worker: str = "Inès Durand") -> None:
        new = devices_service.NewDevice(
            device_id, worker, "nurse", "+33612345678", "2468", "1357"
        ).validate()
        with write_scope(self.runtime.engine) as s:
            devices_service.add_device(s, new=new, now=utcnow())

    def audit(self) -> list[AuditRecord]:
        with write_scope(self.runtime.engine) as s:
            return list(s.exec(select(AuditRecord).order_by(AuditRecord.id)))  # type: ignore[arg-type]


def make_stack(db_url: str, tmp_path: Path, **settings: Any) -> tuple[ApiStack, ThreadedServer]:
    conf = Settings(
        database_url=db_url,
        # Nothing listens there: these tests never start the MQTT link.
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}",
        secret_key=SecretStr(SECRET),
        **{"telephony": "simulated", "internal_access": "network", **settings},
    )
    app = create_app(conf)
    runtime: Runtime = app.state.runtime
    migrate(runtime.engine)
    stack = ApiStack(url="", runtime=runtime, app=app)

    def record(topic: str, payload: bytes, *, expiry_s: int | None = None) -> None:
        stack.published.append((topic, json.loads(payload)))

    runtime.pipeline.downlink = Downlink(record)
    server = ThreadedServer(app).start()
    stack.url = server.url
    return stack, server


def close_stack(stack: ApiStack, server: ThreadedServer) -> None:
    server.stop()
    stack.runtime.pipeline.shutdown()
    stack.runtime.engine.dispose()


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[ApiStack]:
    """The API on SQLite and on PostgreSQL."""
    stack, server = make_stack(db_url, tmp_path)
    try:
        yield stack
    finally:
        close_stack(stack, server)


@pytest.fixture
def api_sqlite(tmp_path: Path) -> Iterator[ApiStack]:
    stack, server = make_stack(f"sqlite:///{tmp_path / 'vigie.db'}", tmp_path)
    try:
        yield stack
    finally:
        close_stack(stack, server)


def ago(**kw: float) -> datetime:
    return utcnow() - timedelta(**kw)
