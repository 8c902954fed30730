"""Crashes and concurrency: a SIGKILLed engine process, two engines on one database, and the
real clock (APScheduler) firing steps on time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session

from alert_server.db import make_engine
from dispatch import DispatchConfig, Dispatcher
from dispatch.channels.twilio import TwilioNotifier
from dispatch.models import SENT, Event, Notification
from dispatch.policy import DEFAULT_POLICY, EscalationPolicy, Step
from dispatch.schemas import Chain, Contact
from tests.dispatch.conftest import CHAIN_13, REF1, REF2, T0, brief
from tests.fakes.fake_twilio import FakeTwilio
from tests.support import wait_until

REPO = Path(__file__).resolve().parents[2]


class EngineProcess:
    def __init__(self, db_url: str, fake: FakeTwilio, lease_s: float = 60.0) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.dispatch.engine_proc",
                db_url,
                fake.url,
                fake.account_sid,
                fake.auth_token,
                fake.from_number,
                str(lease_s),
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def tick(self, seconds: float, *, wait: bool = True) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        when = (T0 + timedelta(seconds=seconds)).isoformat()
        self.proc.stdin.write(f"tick {when}{'' if wait else ' nowait'}\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(10)


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    f = FakeTwilio(timeout_hold_s=3.0).start()
    yield f
    f.stop()


def _start_alerts(engine: Engine, n: int, policy: EscalationPolicy = DEFAULT_POLICY) -> None:
    dispatcher = Dispatcher(
        engine=engine,
        notifier=TwilioNotifier(
            account_sid="AC",
            auth_token="x",
            from_number="+33700000000",
            public_url="http://127.0.0.1:9",
        ),
    )
    with Session(engine) as s:
        for i in range(n):
            dispatcher.start(s, brief=brief(f"alert-{i}"), chains=[CHAIN_13], policy=policy, now=T0)
        s.commit()
    dispatcher.shutdown()


def _sent_to(fake: FakeTwilio) -> Counter[tuple[str, str]]:
    return Counter([("sms", m.to) for m in fake.sms] + [("voice", c.to) for c in fake.calls])


def test_sigkill_between_steps_resumes_at_the_right_step(
    engine: Engine, db_url: str, fake: FakeTwilio
) -> None:
    _start_alerts(engine, 1)
    first = EngineProcess(db_url, fake)
    assert '"sent": 1' in first.tick(0)
    assert '"sent": 1' in first.tick(30)
    first.kill()  # between step 2 (call at 30 s) and step 3 (90 s)
    second = EngineProcess(db_url, fake)
    assert '"claimed": 0' in second.tick(31)  # nothing replayed
    assert '"sent": 2' in second.tick(90)
    second.stop()
    assert _sent_to(fake) == Counter(
        {
            ("sms", REF1.phone): 1,
            ("voice", REF1.phone): 1,
            ("sms", REF2.phone): 1,
            ("voice", REF2.phone): 1,
        }
    )


def test_sigkill_while_the_provider_holds_the_request(
    engine: Engine, db_url: str, fake: FakeTwilio
) -> None:
    """The server dies with a send in flight (the fake holds then drops it, as a dead
    connection would): another server takes the row over when the lease expires."""
    _start_alerts(engine, 1)
    fake.inject("timeout", times=1, kind="sms")
    first = EngineProcess(db_url, fake, lease_s=20)
    first.tick(0, wait=False)
    deadline = time.monotonic() + 5
    while not fake.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    first.kill()
    second = EngineProcess(db_url, fake, lease_s=20)
    assert '"claimed": 0' in second.tick(5)  # the lease of the dead server still holds
    assert '"sent": 1' in second.tick(21)
    second.stop()
    assert _sent_to(fake) == Counter({("sms", REF1.phone): 1})
    with Session(engine) as s:
        kinds = [e.kind for e in s.execute(select(Event)).scalars()]
    assert "takeover" in kinds  # flagged in the timeline: a duplicate was possible


def _real_s(after_s: float) -> float:
    """Tick time (seconds after T0) that is ``after_s`` from the real now: the provider's list
    is dated by the real clock, and the reconciliation compares the two."""
    return (datetime.now(UTC) - T0).total_seconds() + after_s


@pytest.mark.parametrize("channel", ["sms", "voice"])
def test_sigkill_after_the_provider_accepted_is_not_sent_twice(
    engine: Engine, db_url: str, fake: FakeTwilio, channel: str
) -> None:
    """The provider accepted the message, the server died before storing its SID: the server
    taking the row over finds it in the provider's list and records it instead of sending it
    a second time (the duplicate window of at-least-once delivery, closed)."""
    _start_alerts(
        engine,
        1,
        EscalationPolicy(steps=(Step(after_s=0, contact=1, channels=(channel,)),), repeat=0),
    )
    fake.inject("accept_hold", times=1)
    first = EngineProcess(db_url, fake, lease_s=20)
    claimed_at = _real_s(0)
    first.tick(claimed_at, wait=False)
    wait_until(lambda: len(fake.sms) + len(fake.calls) == 1, 60, "the provider accepted it")
    first.kill()
    second = EngineProcess(db_url, fake, lease_s=20)
    # 5 s after the claim on the engines' clock, however long the second process took to start
    # on a busy machine: the dead server's lease still holds.
    assert '"claimed": 0' in second.tick(claimed_at + 5)
    assert '"sent": 1' in second.tick(_real_s(80))  # a minute on: the SMS text changed since
    second.stop()
    assert _sent_to(fake) == Counter({(channel, REF1.phone): 1})
    assert [r["kind"] for r in fake.requests] == [channel.replace("voice", "call")]
    assert fake.list_requests  # looked up, not sent again
    accepted = (fake.sms or fake.calls)[0].sid
    with Session(engine) as s:
        (row,) = s.execute(select(Notification)).scalars().all()
        kinds = [e.kind for e in s.execute(select(Event)).scalars()]
    assert row.status == SENT and row.provider_sid == accepted
    assert "reconciled" in kinds


def test_two_crashed_calls_to_one_number_one_accepted_are_both_placed_again(
    engine: Engine, db_url: str, fake: FakeTwilio
) -> None:
    """Two calls to one referent in flight at the crash, only one accepted by the provider:
    which alert it speaks cannot be told from the provider's list, so neither row adopts it
    (adopting the wrong one would leave an alert never called): both are placed again."""
    _start_alerts(
        engine,
        2,
        EscalationPolicy(steps=(Step(after_s=0, contact=1, channels=("voice",)),), repeat=0),
    )
    fake.inject("accept_hold", times=1)
    fake.inject("timeout", times=1)
    first = EngineProcess(db_url, fake, lease_s=20)
    first.tick(_real_s(0), wait=False)
    wait_until(lambda: len(fake.requests) == 2, 60, "both calls in flight")
    first.kill()
    second = EngineProcess(db_url, fake, lease_s=20)
    assert '"sent": 2' in second.tick(_real_s(80))
    second.stop()
    with Session(engine) as s:
        rows = s.execute(select(Notification)).scalars().all()
        kinds = Counter(e.kind for e in s.execute(select(Event)).scalars())
    assert all(r.status == SENT for r in rows)
    assert len(fake.calls) == 3  # the one accepted at the crash, and both placed again
    assert {c.notification_id for c in fake.calls[1:]} == {r.id for r in rows}
    assert kinds["reconcile_ambiguous"] == 1 and kinds["reconciled"] == 0


def test_two_engines_tick_the_same_escalations(
    engine: Engine, db_url: str, fake: FakeTwilio
) -> None:
    n_alerts = 12
    _start_alerts(engine, n_alerts)
    engines = [make_engine(db_url) for _ in range(2)]
    dispatchers = [
        Dispatcher(
            engine=e,
            notifier=TwilioNotifier(
                account_sid=fake.account_sid,
                auth_token=fake.auth_token,
                from_number=fake.from_number,
                api_base=fake.url,
                public_url="http://127.0.0.1:9",
            ),
            # Limits off: 12 alerts on the same 3 referents would defer the repeat pass.
            config=DispatchConfig(
                public_url="http://127.0.0.1:9",
                batch_size=7,
                per_number_max=10_000,
                global_max=10_000,
            ),
        )
        for e in engines
    ]
    times = [0, 30, 90, 150, 210, 240, 300, 360, 430]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(d: Dispatcher) -> None:
        try:
            for t in times:
                barrier.wait(30)
                # Tick until nothing is left at this instant, racing the other engine.
                while d.tick(now=T0 + timedelta(seconds=t)).claimed:
                    pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(d,)) for d in dispatchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    with Session(engine) as s:
        rows = s.execute(select(Notification)).scalars().all()
    assert all(r.status == SENT for r in rows), Counter(r.status for r in rows)
    # Every planned step exactly once: as many requests as rows, one call per notification.
    assert len(fake.sms) + len(fake.calls) == len(rows) == n_alerts * 20
    assert len({c.notification_id for c in fake.calls}) == len(fake.calls)
    assert len({r.provider_sid for r in rows}) == len(rows)
    claimed_by = Counter(r.claimed_by for r in rows)
    assert len(claimed_by) == 2, claimed_by  # both engines did work
    for d in dispatchers:
        d.shutdown()
    for e in engines:
        e.dispose()


def test_real_clock_fires_every_step_never_early(engine: Engine, fake: FakeTwilio) -> None:
    """The real clock (APScheduler) fires each step on its own, in order, never before its
    time. How late it fires is measured by ``benchmarks/run`` (dispatch part), not here."""
    notifier = TwilioNotifier(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        from_number=fake.from_number,
        api_base=fake.url,
        public_url="http://127.0.0.1:9",
    )
    dispatcher = Dispatcher(
        engine=engine,
        notifier=notifier,
        config=DispatchConfig(public_url="http://127.0.0.1:9"),
        background=True,
        sweep_s=1.0,
    )
    dispatcher.start_background()
    try:
        policy = EscalationPolicy(
            steps=(
                Step(after_s=0, contact=1, channels=("sms",)),
                Step(after_s=1, contact=2, channels=("sms",)),
                Step(after_s=2, contact=1, channels=("voice",)),
            ),
            repeat=0,
        )
        created = datetime.now(UTC)
        chain = Chain("13", "PN", (Contact("A", "+33600000001"), Contact("B", "+33600000002")))
        with Session(engine) as s:
            dispatcher.start(
                s,
                brief=brief("live", created_at=created),
                chains=[chain],
                policy=policy,
                now=created,
            )
            s.commit()  # the after-commit kick sends the first SMS at once
        sms_a = fake.phones.expect_sms("+33600000001", timeout=60)
        sms_b = fake.phones.expect_sms("+33600000002", timeout=60)
        call = fake.phones.expect_call("+33600000001", timeout=60)
        late = [
            (sms_a.received_utc - created).total_seconds(),
            (sms_b.received_utc - created).total_seconds() - 1,
            (call.received_utc - created).total_seconds() - 2,
        ]
        assert all(x > -0.01 for x in late), late
    finally:
        dispatcher.shutdown()
