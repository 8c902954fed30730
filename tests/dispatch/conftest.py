"""The dispatch harness: a migrated database (SQLite and PostgreSQL), the real Twilio client
against a fake Twilio server, the webhooks served by uvicorn, and a controlled clock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, select
from sqlmodel import Session

from dispatch import DispatchConfig, Dispatcher, TickReport
from dispatch.channels.twilio import TwilioNotifier
from dispatch.models import Notification
from dispatch.policy import DEFAULT_POLICY, EscalationPolicy
from dispatch.schemas import AlertBrief, Chain, Contact
from dispatch.webhooks import make_router
from tests.fakes.app_server import ThreadedServer
from tests.fakes.fake_twilio import FakeTwilio, Phones

T0 = datetime(2026, 11, 22, 17, 4, 5, tzinfo=UTC)

REF1 = Contact("Référent santé DDSP 13", "+33491000013")
REF2 = Contact("CIC Marseille", "+33491000113")
NAT = Contact("Permanence nationale", "+33100000000")
GN84 = Contact("Référent santé groupement 84", "+33490000084")
CHAIN_13 = Chain("13", "PN", (REF1, REF2, NAT))
CHAIN_84 = Chain("84", "GN", (GN84, NAT))


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def set(self, now: datetime) -> None:
        with self._lock:
            self.now = now


class RecordingHooks:
    def __init__(self) -> None:
        self.acked: list[tuple[str, str, str | None, str]] = []
        self.after_acked: list[str] = []
        self.exhausted: list[str] = []
        self.after_exhausted_ids: list[str] = []
        self.changes = 0

    def on_acknowledged(self, session, alert_id, by_name, by_phone, via, at) -> None:  # type: ignore[no-untyped-def]
        self.acked.append((alert_id, by_name, by_phone, via))

    def after_acknowledged(self, alert_id, by_name, by_phone, via, at) -> None:  # type: ignore[no-untyped-def]
        self.after_acked.append(alert_id)

    def on_exhausted(self, session, alert_id, at) -> None:  # type: ignore[no-untyped-def]
        self.exhausted.append(alert_id)

    def after_exhausted(self, alert_id, at) -> None:  # type: ignore[no-untyped-def]
        self.after_exhausted_ids.append(alert_id)

    def after_change(self, alert_id) -> None:  # type: ignore[no-untyped-def]
        self.changes += 1


def brief(alert_id: str = "alert-1", kind: str = "sos", created_at: datetime = T0) -> AlertBrief:
    return AlertBrief(
        alert_id=alert_id,
        device_id="dev-001",
        kind=kind,
        created_at=created_at,
        worker_first_name="Camille",
        worker_role="nurse",
        worker_phone="+33612345678",
        commune="Aubagne",
        departement="13",
        place_label="12 rue des Lilas",
        lat=43.29278,
        lon=5.57083,
        acc_m=12,
        position_at=created_at - timedelta(seconds=20),
        position_source="gps",
    )


@dataclass
class Harness:
    engine: Engine
    fake: FakeTwilio
    dispatcher: Dispatcher
    clock: FakeClock
    hooks: RecordingHooks
    app_url: str
    phones: Phones
    t0: datetime = T0
    started: list[str] = field(default_factory=list)

    def start(
        self,
        alert_id: str = "alert-1",
        chains: tuple[Chain, ...] = (CHAIN_13,),
        policy: EscalationPolicy = DEFAULT_POLICY,
        kind: str = "sos",
    ) -> bool:
        with Session(self.engine) as s:
            created = self.dispatcher.start(
                s,
                brief=brief(alert_id, kind, self.t0),
                chains=list(chains),
                policy=policy,
                now=self.clock(),
            )
            s.commit()
        return created

    def at(self, seconds: float, *, alert_id: str | None = None) -> TickReport:
        """Set the clock to T0 + seconds and run one tick (or run_due for one alert)."""
        self.clock.set(self.t0 + timedelta(seconds=seconds))
        if alert_id is not None:
            return self.dispatcher.run_due(alert_id=alert_id, now=self.clock())
        return self.dispatcher.tick(now=self.clock())

    def notifications(self, alert_id: str = "alert-1") -> list[Notification]:
        with Session(self.engine) as s:
            return list(
                s.execute(
                    select(Notification)
                    .where(Notification.alert_id == alert_id)  # type: ignore[arg-type]
                    .order_by(Notification.id)  # type: ignore[arg-type]
                ).scalars()
            )

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    fake = FakeTwilio(timeout_hold_s=1.0).start()
    try:
        yield fake
    finally:
        fake.stop()


def make_harness(
    engine: Engine, fake: FakeTwilio, config: DispatchConfig | None = None
) -> tuple[Harness, ThreadedServer]:
    from tests.fakes.app_server import free_port

    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    clock = FakeClock(T0)
    hooks = RecordingHooks()
    notifier = TwilioNotifier(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        from_number=fake.from_number,
        api_base=fake.url,
        public_url=app_url,
        http_timeout_s=0.5,
    )
    cfg = config or DispatchConfig(public_url=app_url, retry_backoff_s=(1.0, 2.0, 4.0))
    dispatcher = Dispatcher(engine=engine, notifier=notifier, hooks=hooks, config=cfg, clock=clock)
    app = FastAPI()
    app.include_router(make_router(dispatcher, auth_token=fake.auth_token, public_url=app_url))
    server = ThreadedServer(app, port=port).start()
    fake.webhook_base = app_url
    h = Harness(engine, fake, dispatcher, clock, hooks, app_url, fake.phones)
    return h, server


@pytest.fixture
def harness(engine: Engine, fake_twilio: FakeTwilio) -> Iterator[Harness]:
    h, server = make_harness(engine, fake_twilio)
    try:
        yield h
        # GoAlert's rule: the test fails on any SMS or call nobody expected.
        h.phones.assert_no_unexpected()
    finally:
        server.stop()
        h.dispatcher.shutdown()
