"""The reconciliation after a crash must never adopt a provider request that another row's send,
still in flight, owns: that row's alert would be spoken in the adopting row's place and the
adopting row's alert never called. The interleavings are forced (a hook runs the other server's
decision at the instant the provider has accepted a call and its SID is not stored yet), the
times are explicit: nothing here depends on luck of timing.

Real Twilio client against the fake Twilio, SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select, update
from sqlmodel import Session

from alert_server.db import make_engine
from dispatch import DispatchConfig, Dispatcher
from dispatch.channels.base import SendResult
from dispatch.channels.twilio import TwilioNotifier
from dispatch.models import SENDING, SENT, Event, Notification
from dispatch.policy import EscalationPolicy, Step
from dispatch.store import NOTIF
from tests.dispatch.conftest import CHAIN_13, REF1, brief
from tests.fakes.fake_twilio import FakeTwilio

ONE_CALL = EscalationPolicy(steps=(Step(after_s=0, contact=1, channels=("voice",)),), repeat=0)


class HookedNotifier(TwilioNotifier):
    """The real Twilio notifier; ``after_accept`` runs once, after the provider accepted a call
    and before its SID is handed back to the engine (the instant a slow or dying server is
    in)."""

    after_accept: Callable[[], None] | None = None

    def place_call(self, *, to: str, notification_id: int, alert_id: str) -> SendResult:
        result = super().place_call(to=to, notification_id=notification_id, alert_id=alert_id)
        hook, self.after_accept = self.after_accept, None
        if hook is not None:
            hook()
        return result


def _server(engine: Engine, fake: FakeTwilio, name: str, lease_s: float) -> Dispatcher:
    notifier = HookedNotifier(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        from_number=fake.from_number,
        api_base=fake.url,
        public_url="http://127.0.0.1:9",
    )
    config = DispatchConfig(public_url="http://127.0.0.1:9", lease_s=lease_s, server_id=name)
    return Dispatcher(engine=engine, notifier=notifier, config=config)


def _start(d: Dispatcher, alert_id: str, at: datetime) -> Notification:
    with Session(d.engine) as s:
        d.start(s, brief=brief(alert_id, created_at=at), chains=[CHAIN_13], policy=ONE_CALL, now=at)
        s.commit()
        rows = s.execute(select(Notification).where(Notification.alert_id == alert_id))  # type: ignore[arg-type]
        (row,) = rows.scalars()
        return row


def _sending(
    engine: Engine, ids: list[int], at: datetime, lease_s: float, server: str = "dead-server"
) -> None:
    """A server's send under way since ``at``: the row committed ``sending`` before the
    provider call, with its claim and lease, and no SID (what a killed server leaves)."""
    with Session(engine) as s:
        s.execute(
            update(NOTIF)
            .where(NOTIF.c.id.in_(ids))
            .values(
                status=SENDING,
                claim_token=f"{server}-token",
                claimed_by=server,
                sending_at=at,
                lease_until=at + timedelta(seconds=lease_s),
                updated_at=at,
            )
        )
        s.commit()


def _assert_each_row_called_for_itself(engine: Engine, fake: FakeTwilio) -> list[Notification]:
    """Every row SENT, with the SID of a call that speaks that row's own notification."""
    with Session(engine) as s:
        rows = list(s.execute(select(Notification)).scalars())
    speaks = {c.sid: c.notification_id for c in fake.calls}
    assert [(r.id, r.status) for r in rows] == [(r.id, SENT) for r in rows]
    assert {r.id: speaks.get(r.provider_sid or "") for r in rows} == {r.id: r.id for r in rows}
    return rows


def _event_kinds(engine: Engine) -> Counter[str]:
    with Session(engine) as s:
        return Counter(e.kind for e in s.execute(select(Event)).scalars())


def test_the_other_row_of_a_group_does_not_adopt_the_call_placed_again_for_the_first(
    engine: Engine, fake_twilio: FakeTwilio
) -> None:
    """The CI failure of test_two_crashed_calls_to_one_number_one_accepted_are_both_placed_again,
    forced. Two calls to one referent were in flight when the server died; the provider had
    accepted the first. The server taking both over decides for the first row: ambiguous (one
    accepted call, two rows), so it places it again. Its new call is accepted; before its SID
    is stored, the second row decides. Its lookup lists the first call (set aside) and the new
    one (no row holds it yet): the second row must not take it for its own."""
    fake = fake_twilio
    crash = datetime.now(UTC)  # the fake dates what it accepts with the real clock
    lease_s = 20.0
    d = _server(engine, fake, "taking-over", lease_s)
    a = _start(d, "alert-0", crash)
    b = _start(d, "alert-1", crash)
    assert a.id is not None and b.id is not None
    _sending(engine, [a.id, b.id], crash, lease_s)
    d.notifier.place_call(to=REF1.phone, notification_id=a.id, alert_id=a.alert_id)

    # Taken over a minute later (as in the process test); one claim, two rows, as the tick
    # hands them to its workers: the first row's send, and the second's decision at the
    # instant the first row's new call is accepted and not yet recorded.
    now = crash + timedelta(seconds=80)
    claims = d.sender._claim(now, None, 10)
    assert [(c.id, c.takeover) for c in claims] == [(a.id, True), (b.id, True)]
    first, second = claims
    outcomes: dict[int, str] = {}

    def second_decides() -> None:
        outcomes[second.id] = d.sender._send_guarded(second, now, time.monotonic())

    assert isinstance(d.notifier, HookedNotifier)
    d.notifier.after_accept = second_decides
    outcomes[first.id] = d.sender._send_guarded(first, now, time.monotonic())
    d.shutdown()

    assert outcomes == {a.id: "sent", b.id: "sent"}
    _assert_each_row_called_for_itself(engine, fake)
    assert len(fake.calls) == 3  # the one accepted at the crash, and both placed again
    assert sorted(c.notification_id for c in fake.calls[1:]) == [a.id, b.id]
    kinds = _event_kinds(engine)
    assert kinds["reconcile_ambiguous"] == 1 and kinds["reconciled"] == 0


def test_a_crashed_row_does_not_adopt_the_call_a_live_server_has_not_recorded_yet(
    engine: Engine, db_url: str, fake_twilio: FakeTwilio
) -> None:
    """Same defect, one clock, two servers. Server 1 places a call to the referent; the
    provider accepts it, and server 1 is slow to store its SID (a database stall, shorter than
    its lease: server 1 is alive). Meanwhile server 2 takes over a row to the same referent
    that a dead server left ``sending`` (its call never reached the provider). The provider's
    list shows server 1's call, older than the in-flight cut-off and held by no row: it is
    server 1's, and server 2 must call for its own row."""
    fake = fake_twilio
    lease_s = 60.0
    engine2 = make_engine(db_url)
    server1 = _server(engine, fake, "server-1", lease_s)
    server2 = _server(engine2, fake, "server-2", lease_s)
    now1 = datetime.now(UTC)  # the engines' clock and the fake's agree here
    crashed = _start(server1, "alert-crashed", now1 - timedelta(seconds=90))
    live = _start(server1, "alert-live", now1)
    assert crashed.id is not None and live.id is not None
    _sending(engine, [crashed.id], now1 - timedelta(seconds=61), lease_s)

    # Server 1's SID write is stalled for 20 s after the provider accepted its call (more than
    # the HTTP time-out and the clock skew the reconciliation allows for; less than the lease).
    now2 = now1 + timedelta(seconds=20)
    reports = []

    def server2_takes_over() -> None:
        reports.append(server2.run_due(alert_id="alert-crashed", now=now2))

    assert isinstance(server1.notifier, HookedNotifier)
    server1.notifier.after_accept = server2_takes_over
    report1 = server1.run_due(alert_id="alert-live", now=now1)
    server1.shutdown()
    server2.shutdown()
    engine2.dispose()

    (report2,) = reports
    assert (report1.claimed, report1.sent) == (1, 1)
    assert (report2.claimed, report2.sent) == (1, 1)
    _assert_each_row_called_for_itself(engine, fake)
    assert sorted(c.notification_id for c in fake.calls) == sorted([crashed.id, live.id])
    assert _event_kinds(engine)["reconciled"] == 0


def test_a_send_in_flight_begun_after_the_crash_does_not_stop_the_adoption(
    engine: Engine, fake_twilio: FakeTwilio
) -> None:
    """The other side: none sent twice. The provider accepted the call of a row whose server
    died; when it is taken over, another call to the same referent is under way, begun long
    after that call was accepted. It cannot be that send's: the row adopts its call."""
    fake = fake_twilio
    crash = datetime.now(UTC)  # the fake dates what it accepts with the real clock
    lease_s = 20.0
    d = _server(engine, fake, "taking-over", lease_s)
    crashed = _start(d, "alert-crashed", crash)
    live = _start(d, "alert-live", crash)
    assert crashed.id is not None and live.id is not None
    _sending(engine, [crashed.id], crash, lease_s)
    accepted = d.notifier.place_call(
        to=REF1.phone, notification_id=crashed.id, alert_id=crashed.alert_id
    )
    now = crash + timedelta(seconds=25)
    _sending(engine, [live.id], now, lease_s, server="live-server")

    report = d.run_due(alert_id="alert-crashed", now=now)
    d.shutdown()

    assert (report.claimed, report.sent) == (1, 1)
    assert [c.sid for c in fake.calls] == [accepted.sid]  # recorded, not placed again
    with Session(engine) as s:
        row = s.get(Notification, crashed.id)
    assert row is not None and (row.status, row.provider_sid) == (SENT, accepted.sid)
    kinds = _event_kinds(engine)
    assert kinds["reconciled"] == 1 and kinds["reconcile_ambiguous"] == 0
