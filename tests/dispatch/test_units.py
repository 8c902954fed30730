"""Unit tests: messages, policy planning, reply parsing, ack codes, rate limits, leases,
migrations. In-memory notifier, explicit `now`, no sleeps (except the simulated channel)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, select
from sqlmodel import Session, SQLModel

from dispatch import DispatchConfig, Dispatcher, inbound, messages
from dispatch.channels import simulated
from dispatch.channels.base import PermanentSendError, SendResult, TransientSendError
from dispatch.channels.simulated import LATER_WORKERS, SENT_KEPT, SimulatedNotifier
from dispatch.messages import MessageContext, is_gsm7, sms_segments, to_gsm7
from dispatch.models import AckCode, Notification
from dispatch.policy import DEFAULT_POLICY, EscalationPolicy, Step, plan, round_length_s
from dispatch.schemas import Chain, Contact
from tests.dispatch.conftest import CHAIN_13, NAT, REF1, REF2, T0, brief


class RecordingNotifier:
    name = "recording"

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str | None, int]] = []
        self.fail: dict[str, Exception] = {}
        self.lock = threading.Lock()

    def send_sms(self, *, to: str, body: str, notification_id: int, alert_id: str) -> SendResult:
        if to in self.fail:
            raise self.fail[to]
        with self.lock:
            self.sent.append(("sms", to, body, notification_id))
        return SendResult(sid=f"SM{notification_id:032d}", status="queued")

    def place_call(self, *, to: str, notification_id: int, alert_id: str) -> SendResult:
        if to in self.fail:
            raise self.fail[to]
        with self.lock:
            self.sent.append(("voice", to, None, notification_id))
        return SendResult(sid=f"CA{notification_id:032d}", status="queued")


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def make(engine: Engine, **cfg: object) -> tuple[Dispatcher, RecordingNotifier]:
    notifier = RecordingNotifier()
    config = DispatchConfig(public_url="https://vigie.example.fr", **cfg)  # type: ignore[arg-type]
    return Dispatcher(engine=engine, notifier=notifier, config=config), notifier


def start(
    d: Dispatcher,
    alert_id: str = "alert-1",
    chains: tuple[Chain, ...] = (CHAIN_13,),
    policy: EscalationPolicy = DEFAULT_POLICY,
) -> None:
    with Session(d.engine) as s:
        d.start(s, brief=brief(alert_id), chains=list(chains), policy=policy, now=T0)
        s.commit()


# --- messages -----------------------------------------------------------------------------


def _all_sms(b: object, lang: str) -> list[str]:
    ctx = MessageContext(brief=b, code="482", public_url="https://vigie.example.fr", lang=lang)  # type: ignore[arg-type]
    dctx = replace(ctx, duress=True)
    return [
        messages.alert_sms(ctx, at(60)),
        messages.alert_sms(dctx, at(60)),
        messages.duress_sms(ctx, at(60)),
        messages.ack_info_sms(
            ctx, by_name="CIC Marseille", by_phone="+33491000113", at=at(60), to_acker=False
        ),
        messages.ack_info_sms(
            ctx, by_name="CIC Marseille", by_phone=None, at=at(60), to_acker=True
        ),
        messages.stand_down_sms(ctx, at=at(60)),
        messages.already_taken_sms(ctx, by_name="Référent Prêtre", status="acknowledged"),
        messages.already_taken_sms(ctx, by_name=None, status="stood_down"),
        messages.unknown_code_sms(lang),  # type: ignore[arg-type]
        messages.code_locked_sms(15, lang),  # type: ignore[arg-type]
        # A number that got no code (never holds the SMS back): the link or the call.
        messages.alert_sms(replace(ctx, code=""), at(60)),
        messages.stand_down_sms(replace(ctx, code=""), at=at(60)),
    ]


@pytest.mark.parametrize("lang", ["fr", "en"])
@pytest.mark.parametrize(
    "kind", ["sos", "sos_silent", "fall", "no_motion", "session_overdue", "zorglub"]
)
@pytest.mark.parametrize("role", ["nurse", "pharmacist", "other", None])
def test_every_sms_is_gsm7_and_short(kind: str, role: str | None, lang: str) -> None:
    b = replace(
        brief(kind=kind),
        worker_role=role,
        worker_first_name="Zoë-Françoise",
        commune="L’Haÿ-les-Roses",
        place_label="Résidence « Les Cèdres », bât. Œ, 2ᵉ étage — côté forêt",
    )
    for text in _all_sms(b, lang):
        assert is_gsm7(text), text
        assert sms_segments(text) <= 3, (sms_segments(text), len(text), text)
    alert = messages.alert_sms(
        MessageContext(b, "482", "https://vigie.example.fr", lang=lang), at(60)
    )  # type: ignore[arg-type]
    assert "https://vigie.example.fr/alerts/alert-1" in alert
    assert "mlat=43.29278&mlon=5.57083#map=17/43.29278/5.57083" in alert
    if lang == "fr":
        assert "Répondez OK 482 pour prendre en charge" in alert
        assert "à 12 m près" in alert and "il y a 1 min" in alert


def test_french_alert_sms_reads_right() -> None:
    ctx = MessageContext(brief(), "482", "https://vigie.example.fr")
    text = messages.alert_sms(ctx, at(30))
    assert text.startswith("Vigie SOS: Infirmier(e) Camille, rappel +33612345678. Aubagne, 12 rue")
    assert sms_segments(text) == 2
    silent = messages.alert_sms(replace(ctx, brief=brief(kind="sos_silent")), at(30))
    assert "SOS DISCRET" in silent and "prudence" in silent
    assert "CHUTE" in messages.alert_sms(replace(ctx, brief=brief(kind="fall")), at(0))
    assert "IMMOBILITÉ" in messages.alert_sms(replace(ctx, brief=brief(kind="no_motion")), at(0))
    assert "VISITE DÉPASSÉE" in messages.alert_sms(
        replace(ctx, brief=brief(kind="session_overdue")), at(0)
    )
    assert "CONTRAINTE" in messages.alert_sms(replace(ctx, duress=True), at(0))
    unknown = replace(
        brief(),
        lat=None,
        lon=None,
        commune=None,
        place_label=None,
        worker_role=None,
        worker_first_name=None,
        worker_phone=None,
    )
    assert "position inconnue" in messages.alert_sms(replace(ctx, brief=unknown), at(0))


def test_transliteration_and_segments() -> None:
    assert to_gsm7("l’œil être reçu « ici » – ça") == 'l\'oeil etre recu "ici" - ca'
    assert to_gsm7("é è à ù É") == "é è à ù É"  # GSM-7 already
    assert sms_segments("a" * 160) == 1
    assert sms_segments("a" * 161) == 2
    assert sms_segments("a" * 306) == 2 and sms_segments("a" * 307) == 3
    assert sms_segments("€" * 80) == 1 and sms_segments("€" * 81) == 2  # extension: 2 septets
    assert sms_segments("ê" * 70) == 1 and sms_segments("ê" * 71) == 2  # UCS-2


def test_voice_text_is_french_and_asks_for_1() -> None:
    text = messages.voice_text(MessageContext(brief(), "482", "https://x"))
    assert "infirmier ou infirmière Camille" in text and "Appuyez sur 1" in text


def test_parse_ack() -> None:
    for body in ("OK 482", "ok482", " Ok  4 8 2 ", "482", "OK 482.", "o k 482"):
        assert inbound.parse_ack(body) == ("code", "482"), body
    assert inbound.parse_ack("OK 4821") == ("code", "4821")  # longer codes, when issued
    assert inbound.parse_ack("ok 482 105") == ("code", "482105")
    assert inbound.parse_ack("ok") == ("ok", None)
    assert inbound.parse_ack("OK 48") == ("other", None)
    assert inbound.parse_ack("OK 4821567") == ("other", None)  # longer than ever issued
    assert inbound.parse_ack("j'arrive") == ("other", None)


# --- policy ---------------------------------------------------------------------------------


def test_plan_default_policy() -> None:
    assert round_length_s(DEFAULT_POLICY) == 210
    items = plan(DEFAULT_POLICY, 3)
    first = [(p.offset_s, p.position, p.channel) for p in items if p.round_no == 0]
    assert first == [
        (0, 1, "sms"),
        (30, 1, "voice"),
        (90, 2, "sms"),
        (90, 2, "voice"),
        (150, 1, "sms"),
        (150, 2, "sms"),
        (150, 3, "sms"),
        (150, 1, "voice"),
        (150, 2, "voice"),
        (150, 3, "voice"),
    ]
    assert [p.offset_s for p in items if p.round_no == 1][:2] == [210, 240]
    # A position past the end falls to the last contact (the national fallback).
    assert {p.position for p in plan(DEFAULT_POLICY, 1)} == {1}
    assert plan(DEFAULT_POLICY, 0) == []


# --- database ---------------------------------------------------------------------------------


def test_models_match_migrations(engine: Engine) -> None:
    import dispatch.models  # noqa: F401

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = [d for d in compare_metadata(ctx, SQLModel.metadata) if "dispatch_" in repr(d)]
    assert diffs == []


def test_first_notification_goes_out_with_run_due(engine: Engine) -> None:
    d, rec = make(engine)
    start(d)
    report = d.run_due(alert_id="alert-1", now=T0)
    assert report.sent == 1 and rec.sent[0][:2] == ("sms", REF1.phone)
    d.shutdown()


def test_ack_codes_unique_per_number_among_open_alerts(engine: Engine) -> None:
    d, _rec = make(engine)
    for i in range(40):
        start(d, f"a{i}")
    with Session(engine) as s:
        rows = s.execute(select(AckCode)).scalars().all()
        per_phone: dict[str, list[str]] = {}
        for r in rows:
            per_phone.setdefault(r.phone, []).append(r.code)
        for codes in per_phone.values():
            assert len(codes) == len(set(codes)) == 40
            assert all(len(c) == 3 and c.isdigit() for c in codes)
        d.close(s, alert_id="a0", now=at(10))
        s.commit()
        assert (
            s.execute(select(AckCode).where(AckCode.alert_id == "a0")).scalars().first().released_at
        )  # type: ignore[union-attr,arg-type]
    d.shutdown()


def test_reply_with_code_of_another_number_changes_nothing(engine: Engine) -> None:
    d, rec = make(engine)
    start(d)
    d.tick(now=T0)
    code = rec.sent[0][2].split("OK ")[1][:3]  # type: ignore[union-attr]
    out, reply = d.sender.handle_inbound_sms(
        from_phone=REF2.phone, to_phone=None, body=f"OK {code}", sid="SMx1", now=at(5)
    )
    assert out.outcome == "not_notified" and reply is None  # REF2 not notified yet
    out, _ = d.sender.handle_inbound_sms(
        from_phone=REF1.phone,
        to_phone=None,
        body="OK 999" if code != "999" else "OK 998",
        sid="SMx2",
        now=at(6),
    )
    assert out.outcome == "unknown_code"
    # Twilio retrying the same webhook: same outcome, nothing new.
    out, _ = d.sender.handle_inbound_sms(
        from_phone=REF2.phone, to_phone=None, body=f"OK {code}", sid="SMx1", now=at(7)
    )
    assert out.outcome.startswith("duplicate")
    # A bare "OK" from the only notified number works when it has one open alert.
    out, _ = d.sender.handle_inbound_sms(
        from_phone=REF1.phone, to_phone=None, body="ok", sid="SMx3", now=at(8)
    )
    assert out.outcome == "acknowledged"
    d.shutdown()


def test_permanent_failure_of_every_number_reaches_the_fallback_fast(engine: Engine) -> None:
    d, rec = make(engine)
    rec.fail[REF1.phone] = PermanentSendError("invalid", code="21211")
    rec.fail[REF2.phone] = PermanentSendError("invalid", code="21211")
    start(d)
    for _ in range(6):
        d.tick(now=at(1))
    # Step 4 reached the fallback; the repeat pass is NOT pulled forward (NAT was reached).
    assert sorted((c, to) for c, to, _b, _n in rec.sent) == [
        ("sms", NAT.phone),
        ("voice", NAT.phone),
    ]
    d.shutdown()


def test_transient_failures_give_up_then_move_on(engine: Engine) -> None:
    d, rec = make(engine, retry_backoff_s=(1.0, 1.0))
    rec.fail[REF1.phone] = TransientSendError("503", code="503")
    start(
        d,
        policy=EscalationPolicy(
            steps=(
                Step(after_s=0, contact=1, channels=("sms",)),
                Step(after_s=100, contact=2, channels=("sms",)),
            ),
            repeat=0,
        ),
    )
    assert d.tick(now=at(0)).retried == 1
    assert d.tick(now=at(1)).retried == 1
    assert d.tick(now=at(2)).failed == 1  # gave up: contact 2 pulled forward from 100 s
    assert d.tick(now=at(2)).sent == 1 and rec.sent[-1][1] == REF2.phone
    d.shutdown()


def test_rate_limit_never_holds_back_first_pass(engine: Engine) -> None:
    d, rec = make(engine, per_number_max=1, per_number_window_s=60.0)
    start(d)
    d.tick(now=at(0))
    d.tick(now=at(30))  # second message to REF1 within the window: first pass, not limited
    assert [c for c, to, _b, _n in rec.sent] == ["sms", "voice"]
    with Session(engine) as s:
        d.acknowledge(s, alert_id="alert-1", by="Opérateur", via="dashboard", now=at(31))
        s.commit()
    r = d.tick(now=at(31))
    assert r.deferred == 1 and len(rec.sent) == 2  # the "taken" SMS waits
    d.tick(now=at(100))
    assert len(rec.sent) == 3 and "Opérateur" in (rec.sent[-1][2] or "")
    d.shutdown()


def test_lease_of_a_dead_server_is_taken_over_once(engine: Engine) -> None:
    dead, dead_rec = make(engine, lease_s=20.0)
    alive, rec = make(engine, lease_s=20.0)
    start(dead)
    claims = dead.sender._claim(T0, None, 10)  # claimed, then the server "dies"
    assert len(claims) == 1 and dead_rec.sent == []
    assert alive.tick(now=at(1)).claimed == 0  # the lease still holds
    assert alive.tick(now=at(21)).sent == 1
    assert alive.tick(now=at(22)).claimed == 0
    assert len(rec.sent) == 1
    dead.shutdown()
    alive.shutdown()


def test_ack_cancels_a_claimed_row_before_it_is_sent(engine: Engine) -> None:
    d, rec = make(engine)
    start(d)
    claims = d.sender._claim(T0, None, 10)
    with Session(engine) as s:
        assert d.acknowledge(
            s, alert_id="alert-1", by="Opérateur", via="dashboard", now=at(0)
        ).accepted
        s.commit()
    assert d.sender._send(claims[0], T0, time.monotonic()) == "skipped"
    assert rec.sent == []
    d.shutdown()


def test_concurrent_acks_exactly_one_wins(engine: Engine) -> None:
    d, _rec = make(engine)
    start(d)
    results = []
    barrier = threading.Barrier(4)

    def ack(i: int) -> None:
        barrier.wait()
        with Session(engine) as s:
            results.append(
                d.acknowledge(
                    s, alert_id="alert-1", by=f"op{i}", via="dashboard", now=at(1)
                ).accepted
            )
            s.commit()

    threads = [threading.Thread(target=ack, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False, False, False, True]
    d.shutdown()


def test_dst_nights_count_real_seconds(engine: Engine) -> None:
    # 2026-03-29 01:00 UTC: Paris jumps from 02:00 to 03:00; 2026-10-25 01:00 UTC: back to 02:00.
    d, rec = make(engine)
    for alert_id, t0 in (
        ("spring", datetime(2026, 3, 29, 0, 59, 40, tzinfo=UTC)),
        ("autumn", datetime(2026, 10, 25, 0, 59, 40, tzinfo=UTC)),
    ):
        with Session(engine) as s:
            d.start(
                s,
                brief=brief(alert_id, created_at=t0),
                chains=[CHAIN_13],
                policy=DEFAULT_POLICY,
                now=t0,
            )
            s.commit()
        d.tick(now=t0)
        d.tick(now=t0 + timedelta(seconds=29))
        assert len([x for x in rec.sent if x[0] == "voice"]) == 0
        d.tick(now=t0 + timedelta(seconds=30))
        assert rec.sent[-1][:2] == ("voice", REF1.phone)
        with Session(engine) as s:
            d.acknowledge(
                s,
                alert_id=alert_id,
                by="Opérateur",
                via="dashboard",
                now=t0 + timedelta(seconds=40),
            )
            s.commit()
        d.tick(now=t0 + timedelta(seconds=40))
        rec.sent.clear()
    with Session(engine) as s:
        due = [
            (n.due_at - datetime(2026, 3, 29, 0, 59, 40, tzinfo=UTC)).total_seconds()
            for n in s.execute(
                select(Notification).where(
                    Notification.alert_id == "spring",  # type: ignore[arg-type]
                    Notification.kind == "alert",
                )
            ).scalars()  # type: ignore[arg-type]
        ]
    assert sorted(set(due))[:5] == [0, 30, 90, 150, 210]
    d.shutdown()


def test_dst_local_time_in_messages() -> None:
    ctx = MessageContext(brief(), "482", "https://x")
    spring = datetime(2026, 3, 29, 1, 0, 20, tzinfo=UTC)  # 03:00 in Paris (CEST)
    autumn = datetime(2026, 10, 25, 1, 0, 20, tzinfo=UTC)  # 02:00 in Paris (CET, again)
    assert "à 03:00" in messages.ack_info_sms(
        ctx, by_name="X", by_phone=None, at=spring, to_acker=False
    )
    assert "à 02:00" in messages.ack_info_sms(
        ctx, by_name="X", by_phone=None, at=autumn, to_acker=False
    )


def test_empty_chain_is_exhausted_loudly_not_dropped(engine: Engine) -> None:
    d, _ = make(engine)
    with Session(engine) as s:
        assert d.start(
            s, brief=brief("lonely"), chains=[Chain("13", "PN", ())], policy=DEFAULT_POLICY, now=T0
        )
        s.commit()
        assert d.exhausted(s) == ["lonely"]
    d.shutdown()


def test_simulated_channel_records_and_auto_acknowledges(engine: Engine) -> None:
    sim = SimulatedNotifier(auto_ack_after_s=0.05)
    d = Dispatcher(
        engine=engine, notifier=sim, config=DispatchConfig(public_url="http://127.0.0.1:8000")
    )
    now = datetime.now(UTC)
    with Session(engine) as s:
        d.start(
            s,
            brief=brief("demo", created_at=now),
            chains=[Chain("13", "PN", (Contact("Démo", "+33600000001"),))],
            policy=DEFAULT_POLICY,
            now=now,
        )
        s.commit()
    d.tick(now=now)
    assert sim.sent and sim.sent[0].channel == "sms"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with Session(engine) as s:
            view = d.view(s, alert_id="demo")
        if view is not None and view.status == "acknowledged":
            break
        time.sleep(0.02)
    assert view is not None and view.status == "acknowledged"
    with Session(engine) as s:
        whats = {e.what for e in d.timeline(s, alert_id="demo")}
    assert {"alert_sms", "acknowledged"} <= whats
    sim.close()
    d.shutdown()


def test_simultaneous_failures_of_a_whole_step_still_move_on(engine: Engine) -> None:
    """SMS and call of one step fail at the same instant in two threads: the next step must be
    pulled forward anyway (each failure must see the other one)."""
    for attempt in range(5):
        d, rec = make(engine)
        rec.fail[REF2.phone] = PermanentSendError("invalid", code="21211")
        alert_id = f"sim-{attempt}"
        start(d, alert_id)
        d.tick(now=at(0))
        d.tick(now=at(30))
        assert d.tick(now=at(90)).failed == 2  # contact 2: SMS and call, in parallel
        r = d.tick(now=at(91))  # step 4 (150 s) pulled forward to 90 s
        assert r.sent >= 2, (attempt, r)
        with Session(engine) as s:
            d.close(s, alert_id=alert_id, now=at(92))
            s.commit()
        d.shutdown()


def test_simulated_channel_lets_go_of_what_it_is_done_with() -> None:
    """A demo left running for days: the simulated provider keeps the last messages only,
    nothing of a delivery once it has run, and no thread per message (a thread per delivery
    made thousands of threads an hour in a soak)."""
    delivered: list[str] = []

    class Reports:
        def clock(self) -> datetime:
            return datetime.now(UTC)

        def handle_status(self, *, sid: str, **_: object) -> None:
            delivered.append(sid)

    threads_before = set(threading.enumerate())
    sim = SimulatedNotifier(report_delivery=True)
    sim.attach(Reports())
    for i in range(SENT_KEPT + 10):
        sim.send_sms(to="+33600000001", body=f"Alerte {i}", notification_id=i, alert_id=f"a-{i}")
    assert len(sim.sent) == SENT_KEPT
    assert sim.sent[0].body == "Alerte 10" and sim.sent[-1].body == f"Alerte {SENT_KEPT + 9}"
    new_threads = [t.name for t in threading.enumerate() if t not in threads_before]
    # The channel's few threads (another test's leftovers may come and go meanwhile; a thread
    # per delivery would be a thousand here).
    ours = [name for name in new_threads if name.startswith("simulated-telephony-")]
    assert len(ours) == LATER_WORKERS and len(new_threads) < 2 * LATER_WORKERS, new_threads
    deadline = time.monotonic() + 60
    while len(delivered) < SENT_KEPT + 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(delivered) == SENT_KEPT + 10, "every delivery is reported, once"
    assert len(set(delivered)) == SENT_KEPT + 10
    assert sim.pending() == 0
    sim.close()


def test_simulated_deliveries_run_side_by_side_as_real_callbacks_do() -> None:
    """Each simulated delivery report waits its turn for the database's write lock, as a real
    callback does; run one after another, they fell minutes behind under load (the simulated
    contacts answered late and escalations went on meanwhile). Slow reports overlap."""
    running, most = 0, 0
    lock = threading.Lock()
    done = threading.Semaphore(0)

    class SlowReports:
        def clock(self) -> datetime:
            return datetime.now(UTC)

        def handle_status(self, **_: object) -> None:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            time.sleep(0.3)  # waiting for the write lock
            with lock:
                running -= 1
            done.release()

    sim = SimulatedNotifier(report_delivery=True)
    sim.attach(SlowReports())
    for i in range(LATER_WORKERS):
        sim.send_sms(to="+33600000001", body=f"Alerte {i}", notification_id=i, alert_id=f"a-{i}")
    for _ in range(LATER_WORKERS):
        assert done.acquire(timeout=60)
    sim.close()
    assert most > 1, "the delivery reports ran one after another"


def test_simulated_responder_remembers_the_latest_alerts_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The simulated responder answers each alert once, and remembers which alerts it has
    answered for the latest ones only: a demo left running for days would otherwise keep every
    alert id it ever saw."""
    monkeypatch.setattr(simulated, "ANSWERED_KEPT", 3)
    sim = SimulatedNotifier(auto_ack_after_s=3600, report_delivery=False)
    for i in range(5):
        for _ in range(2):  # its SMS to two numbers: one answer
            sim.send_sms(
                to="+33600000001", body=f"OK {100 + i}", notification_id=i, alert_id=f"a-{i}"
            )
    assert list(sim._auto_acked) == ["a-2", "a-3", "a-4"]
    assert sim.pending() == 5
    sim.close()


def test_closing_the_simulated_channel_waits_for_a_delivery_already_running() -> None:
    """Under load a simulated delivery report could still be writing when the server (or a
    test) had closed the channel and gone on to drop its database. Once ``close`` returns,
    nothing of the channel runs any more, and nothing new is scheduled."""
    started, finished = threading.Event(), threading.Event()

    class SlowDispatcher:
        def clock(self) -> datetime:
            return datetime.now(UTC)

        def handle_status(self, **_: object) -> None:
            started.set()
            time.sleep(0.5)  # a slow database write
            finished.set()

    sim = SimulatedNotifier(report_delivery=True)
    sim.attach(SlowDispatcher())
    sim.send_sms(to="+33600000001", body="Alerte", notification_id=1, alert_id="a-1")
    assert started.wait(30)
    sim.close()
    assert finished.is_set(), "close returned while a delivery report was still running"
    sim.send_sms(to="+33600000001", body="encore", notification_id=2, alert_id="a-2")
    assert sim.pending() == 0
