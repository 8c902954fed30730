"""A pipeline with the real dispatcher, the real Twilio client against the fake Twilio, the
webhooks served by uvicorn, a controlled clock: for the verification of automatic alarms and
the follow-up SMS. SQLite and PostgreSQL (``engine``)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from alert_server.alerts import service as alerts
from alert_server.alerts.models import Alert
from alert_server.db import write_scope
from alert_server.devices.presence import PresenceTracker
from alert_server.dispatch_bridge import DispatchBridge, WorkerOkBridge
from alert_server.downlink import Downlink
from alert_server.pipeline import Pipeline
from alert_server.referents import service as referents
from dispatch import DispatchConfig, Dispatcher, TickReport
from dispatch.channels.twilio import TwilioNotifier
from dispatch.webhooks import make_router
from tests.dispatch.conftest import FakeClock
from tests.fakes.app_server import ThreadedServer, free_port
from tests.fakes.fake_twilio import FakeTwilio, Phones
from tests.sessions.helpers import T0, WORKER_PHONE, add_device

REFERENT = "+33465710013"
FALLBACK = "+33465710014"
VERIFY_S = 30.0
DIRECTORY = f"""\
version: 1
departements: {{}}
national_fallback:
  - name: "Référent santé de permanence"
    phone: "{REFERENT}"
  - name: "Permanence nationale"
    phone: "{FALLBACK}"
"""


@dataclass
class Stack:
    engine: Engine
    fake: FakeTwilio
    dispatcher: Dispatcher
    pipeline: Pipeline
    clock: FakeClock
    phones: Phones
    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def at(self, seconds: float) -> TickReport:
        self.clock.set(T0 + timedelta(seconds=seconds))
        return self.dispatcher.tick(now=self.clock())

    def raise_alert(self, kind: str = "fall", device_id: str = "nurse-1", **values: Any) -> str:
        """Store an alert as ingest does, then route it (at T0, synchronously)."""
        alert_id = str(uuid.uuid4())
        row = {
            "alert_id": alert_id,
            "device_id": device_id,
            "kind": kind,
            "state": "open",
            "duress": False,
            "flags": [],
            "created_at": T0,
            "raw": "{}",
            **values,
        }
        with write_scope(self.engine) as s:
            assert alerts.insert_alert(s, values=row)
        self.clock.set(T0)
        self.pipeline.process(alert_id, T0)
        self.dispatcher.run_due(
            alert_id=alert_id, now=T0
        )  # what the clock's kick does after the commit
        return alert_id

    def alert(self, alert_id: str) -> Alert:
        with write_scope(self.engine) as s:
            a = alerts.get_alert(s, alert_id=alert_id)
        assert a is not None
        return a

    def event_types(self, alert_id: str) -> list[str]:
        with write_scope(self.engine) as s:
            return [e.type for e in alerts.events(s, alert_id=alert_id)]

    def commands(self, type_: str) -> list[dict[str, Any]]:
        return [p for _, p in self.published if p.get("type") == type_]


@pytest.fixture
def stack(engine: Engine, tmp_path: Path) -> Iterator[Stack]:
    fake = FakeTwilio(timeout_hold_s=1.0).start()
    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    clock = FakeClock(T0)
    notifier = TwilioNotifier(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        from_number=fake.from_number,
        api_base=fake.url,
        public_url=app_url,
        http_timeout_s=0.5,
    )
    config = DispatchConfig(public_url=app_url, retry_backoff_s=(1.0, 2.0), verify_s=VERIFY_S)
    published: list[tuple[str, dict[str, Any]]] = []
    lock = threading.Lock()

    def publish(topic: str, payload: bytes, *, expiry_s: int | None = None) -> None:
        with lock:
            published.append((topic, json.loads(payload)))

    downlink = Downlink(publish)
    dispatcher = Dispatcher(
        engine=engine,
        notifier=notifier,
        hooks=DispatchBridge(engine, downlink=downlink),
        verification_hooks=WorkerOkBridge(engine, downlink),
        config=config,
        clock=clock,
    )
    pipeline = Pipeline(
        engine, presence=PresenceTracker(engine), downlink=downlink, dispatcher=dispatcher
    )
    directory = tmp_path / "referents.yaml"
    directory.write_text(DIRECTORY, encoding="utf-8")
    referents.import_directory(engine, directory)
    add_device(engine)
    app = FastAPI()
    app.include_router(make_router(dispatcher, auth_token=fake.auth_token, public_url=app_url))
    server = ThreadedServer(app, port=port).start()
    fake.webhook_base = app_url
    s = Stack(engine, fake, dispatcher, pipeline, clock, fake.phones, published)
    try:
        yield s
        # GoAlert's rule: the test fails on any SMS or call nobody expected.
        s.phones.assert_no_unexpected()
    finally:
        server.stop()
        dispatcher.shutdown()
        pipeline.shutdown()
        fake.stop()


__all__ = ["FALLBACK", "REFERENT", "VERIFY_S", "WORKER_PHONE", "Stack"]
