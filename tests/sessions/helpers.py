"""Helpers for the timed-visit tests: a device and its worker, session messages, a recorder."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, update
from sqlmodel import select

from alert_server.alerts import lifecycle
from alert_server.alerts.models import Alert
from alert_server.db import write_scope
from alert_server.devices import service as devices
from alert_server.devices.models import Device, Worker
from alert_server.downlink import Downlink
from alert_server.pipeline import record_session_message
from alert_server.sessions.engine import SessionConfig, SessionEngine
from alert_server.sessions.models import VisitSession
from vigie import payloads
from vigie.timeutil import rfc3339

T0 = datetime(2026, 11, 22, 13, 0, 0, tzinfo=UTC)
WORKER_PHONE = "+33612345678"
GRACE_S = 120.0
OFFLINE_S = 60.0
EXTEND_S = 600.0
CONFIG = SessionConfig(
    grace_s={"nurse": GRACE_S, "pharmacist": 30.0},
    offline_alert_s=OFFLINE_S,
    checkin_extend_s=EXTEND_S,
    default_duration_s=3600.0,
)
MEMO = "Visite au domicile, 12 rue des Lilas, Aubagne"
POS = {"lat": 43.29, "lon": 5.57, "acc_m": 20, "src": "gps"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def add_device(
    engine: Engine,
    device_id: str = "nurse-1",
    *,
    role: str = "nurse",
    phone: str = WORKER_PHONE,
    online: bool | None = True,
    last_seen_at: datetime | None = T0,
) -> int:
    """A device and its worker, written directly (no Argon2 hashing: these tests never check
    a PIN). Returns the worker id."""
    with write_scope(engine) as s:
        worker = Worker(
            name=f"Camille {device_id}",
            role=role,
            phone=phone,
            pin_hash="-",
            duress_pin_hash="-",
            created_at=T0,
        )
        s.add(worker)
        s.flush()
        assert worker.id is not None
        s.add(
            Device(device_id=device_id, worker_id=worker.id, mqtt_username=device_id, created_at=T0)
        )
        worker_id = worker.id
    if online is not None:
        set_presence(engine, device_id, online=online, last_seen_at=last_seen_at)
    return worker_id


def set_presence(engine: Engine, device_id: str, **values: Any) -> None:
    with write_scope(engine) as s:
        s.execute(
            update(Device).where(Device.device_id == device_id).values(**values)  # type: ignore[arg-type]
        )


def session_msg(
    action: str,
    session_id: str = "s-1",
    *,
    ts: datetime = T0,
    expected_end: datetime | None = None,
    memo: str | None = None,
    pos: dict[str, Any] | None = None,
) -> payloads.SessionMsg:
    body: dict[str, Any] = {"v": 1, "session_id": session_id, "action": action, "ts": rfc3339(ts)}
    if expected_end is not None:
        body["expected_end"] = rfc3339(expected_end)
    if memo is not None:
        body["memo"] = memo
    if pos is not None:
        body["pos"] = {**pos, "ts": rfc3339(ts)}
    msg = payloads.parse_uplink("session", json.dumps(body).encode())
    assert isinstance(msg, payloads.SessionMsg)
    return msg


def send(
    engine: Engine, msg: payloads.SessionMsg, now: datetime, device_id: str = "nurse-1"
) -> None:
    """What the ingest writer does with a session message (through the pipeline): one write
    transaction."""
    with write_scope(engine) as s:
        record_session_message(s, device_id=device_id, msg=msg, now=now)


@dataclass
class Recorder:
    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, topic: str, payload: bytes, *, expiry_s: int | None = None) -> None:
        with self.lock:
            self.published.append((topic, json.loads(payload)))

    def alert_stored(self, alert_id: str) -> None:
        with self.lock:
            self.stored.append(alert_id)

    def warnings(self) -> list[dict[str, Any]]:
        return [p for _, p in self.published if p["type"] == "session.warning"]


def make_engine(engine: Engine, rec: Recorder, config: SessionConfig = CONFIG) -> SessionEngine:
    # The ports plugged as the composition root (alert_server/background.py) does.
    return SessionEngine(
        engine,
        downlink=Downlink(rec.publish),
        alert_stored=rec.alert_stored,
        receive_alert=lifecycle.receive,
        device_states=devices.states,
        config=config,
    )


def alerts_of(engine: Engine) -> list[Alert]:
    with write_scope(engine) as s:
        return list(s.exec(select(Alert).order_by(Alert.id)))  # type: ignore[arg-type]


def session_row(engine: Engine, session_id: str = "s-1") -> VisitSession:
    with write_scope(engine) as s:
        row = s.exec(select(VisitSession).where(VisitSession.session_id == session_id)).first()
    assert row is not None
    return row
