"""No worker's alert ever waits on another: acknowledgement codes that cannot run out, the
urgent class ahead of (and apart from) throttled messages, and the wrong-code lock on SMS
acknowledgement. Explicit ``now``, in-memory notifier, SQLite and PostgreSQL."""

from __future__ import annotations

import collections
import re
import threading
import time
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Engine, func, select, update
from sqlmodel import Session

from alert_server.alerts import dispatch_timeline
from alert_server.db import alembic_config, make_engine, migrate
from dispatch import (
    DispatchConfig,
    Dispatcher,
    TickReport,
    codes,
    inbound,
    lifecycle,
    messages,
    store,
)
from dispatch.channels.base import SendResult
from dispatch.models import (
    KIND_STAND_DOWN,
    PRIORITY_INFO,
    PRIORITY_REPEAT,
    PRIORITY_URGENT,
    SENT,
    AckCode,
    Escalation,
    Event,
    Notification,
)
from dispatch.policy import DEFAULT_POLICY, EscalationPolicy, Step
from dispatch.schemas import Chain
from tests.dispatch.conftest import CHAIN_13, GN84, NAT, REF1, REF2, T0, brief
from tests.dispatch.test_units import RecordingNotifier, at, make, start
from tests.support import done_while_write_locked, sqlite_engine

NOTIF = Notification.__table__  # type: ignore[attr-defined]
# One SMS to the national fallback alone: alerts with an unknown position, whose chain is the
# fallback only (the number every chain ends with).
ONE_SMS = EscalationPolicy(steps=(Step(after_s=0, contact=1, channels=("sms",)),), repeat=0)
FALLBACK_ONLY = Chain(None, None, (NAT,))


def code_in(body: str | None) -> str:
    m = re.search(r"OK (\d+) pour", body or "")
    assert m, body
    return m.group(1)


def open_alerts_on_the_fallback(
    engine: Engine, n: int, *, prefix: str, created_at: datetime
) -> None:
    """``n`` open alerts on the fallback number, their first SMS sent when they were raised
    (recorded as the engine records a send)."""
    with Session(engine) as s:
        for i in range(n):
            lifecycle.start(
                s,
                brief=brief(f"{prefix}{i}", created_at=created_at),
                chains=[FALLBACK_ONLY],
                policy=ONE_SMS,
                now=created_at,
            )
            if i % 250 == 249:
                s.commit()
        s.execute(
            update(NOTIF)
            .where(NOTIF.c.alert_id.like(f"{prefix}%"), NOTIF.c.status == "planned")
            .values(
                status=SENT,
                provider_sid=sa.literal("SMold").concat(sa.cast(NOTIF.c.id, sa.String)),
                provider_status="delivered",
                sent_at=created_at,
            )
        )
        s.commit()


# --- 1. acknowledgement codes never hold an escalation --------------------------------------


def test_2000_open_alerts_on_the_fallback_do_not_hold_a_new_alert(engine: Engine) -> None:
    """900 open alerts on the fallback used to exhaust its 3-digit codes: every new alert in
    France then failed at ``start`` ("no free 3-digit acknowledgement code") and was never
    escalated. 1,000 exhausted (false alarms left open for days) + 1,000 active ones here."""
    d, rec = make(engine)
    now = T0
    open_alerts_on_the_fallback(engine, 1000, prefix="old-", created_at=now - timedelta(days=2))
    open_alerts_on_the_fallback(
        engine, 1000, prefix="recent-", created_at=now - timedelta(seconds=30)
    )
    with Session(engine) as s:
        assert d.start(
            s, brief=brief("new", created_at=now), chains=[CHAIN_13], policy=DEFAULT_POLICY, now=now
        )
        s.commit()
    # The first run of due work sends it, like for any other alert (and exhausts the old ones).
    report = d.tick(now=now)
    assert len(report.exhausted) == 1000
    assert report.sent == 1 and rec.sent[0][:2] == ("sms", REF1.phone)
    first_code = code_in(rec.sent[0][2])
    assert len(first_code) == 3  # REF1 has codes to spare: 3 digits
    with Session(engine) as s:
        held = s.execute(
            select(AckCode.code).where(AckCode.phone == NAT.phone, AckCode.released_at.is_(None))  # type: ignore[call-overload]  # type: ignore[union-attr]
        ).scalars()
        held = list(held)
        assert len(held) == 1000 + 1 == len(set(held))  # active ones + the new alert
        assert all(inbound.parse_ack(f"OK {c}") == ("code", c) for c in held)
        # The exhausted ones released theirs, but none was given again.
        everything = list(
            s.execute(select(AckCode.code).where(AckCode.phone == NAT.phone)).scalars()  # type: ignore[call-overload]
        )
        assert len(everything) == 2001 == len(set(everything))
        old_code = s.execute(
            select(AckCode.code).where(AckCode.alert_id == "old-7")  # type: ignore[call-overload]
        ).scalar_one()
    # The fallback's turn (150 s): its SMS carries its own code, which acknowledges.
    d.tick(now=at(150))
    nat_sms = [b for c, to, b, _ in rec.sent if c == "sms" and to == NAT.phone]
    assert len(nat_sms) == 1
    nat_code = code_in(nat_sms[0])
    # A late reply to an exhausted alert still acknowledges that one (its code was not reused).
    out, _ = d.sender.handle_inbound_sms(
        from_phone=NAT.phone, to_phone=None, body=f"ok {old_code}", sid="SMlate", now=at(151)
    )
    assert (out.outcome, out.alert_id) == ("acknowledged", "old-7")
    out, _ = d.sender.handle_inbound_sms(
        from_phone=NAT.phone, to_phone=None, body=f"OK {nat_code}", sid="SMnew", now=at(152)
    )
    assert (out.outcome, out.alert_id) == ("acknowledged", "new")
    d.shutdown()


def test_codes_are_3_digits_while_free_then_longer(engine: Engine) -> None:
    """With every 3-digit code of a number held, the next one is longer, and read back."""
    with Session(engine) as s:
        s.add_all(
            AckCode(alert_id=f"x{i}", phone=NAT.phone, code=str(i), created_at=T0)
            for i in range(100, 1000)
        )
        s.commit()
        reserved = codes.reserve_codes(
            s, alert_id="a", phones=[REF1.phone, NAT.phone], preferred="482", now=T0
        )
        s.commit()
    assert reserved[REF1.phone] == "482"  # free for REF1: the alert's code
    long_code = reserved[NAT.phone]
    assert long_code is not None and len(long_code) == 4
    assert inbound.parse_ack(f"OK {long_code}") == ("code", long_code)
    assert inbound.parse_ack(" ".join(long_code)) == ("code", long_code)


def test_a_new_escalation_takes_its_first_numbers_code_as_main_code(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting an escalation: the first number's code is the alert's main code, every other
    number has the same one where it is free for it, and all of it comes from one query of
    what is taken (then one insert), whatever the chain's length."""
    draws = iter([[str(c) for c in range(482, 482 + codes.CODE_CANDIDATES)]])
    monkeypatch.setattr(codes, "_draw", lambda digits: next(draws))
    queries = []
    real_taken = codes._taken
    monkeypatch.setattr(codes, "_taken", lambda s, **kw: queries.append(kw) or real_taken(s, **kw))
    with Session(engine) as s:
        # 482 is REF2's code in another open escalation.
        s.add(AckCode(alert_id="other", phone=REF2.phone, code="482", created_at=T0))
        s.commit()
    d, _rec = make(engine)
    start(d, "a", policy=ONE_SMS)
    with Session(engine) as s:
        held = dict(
            s.execute(
                select(AckCode.phone, AckCode.code).where(AckCode.alert_id == "a")  # type: ignore[call-overload]
            ).all()
        )
        main = s.execute(select(Escalation.ack_code).where(Escalation.alert_id == "a")).scalar()  # type: ignore[call-overload]
    assert held == {REF1.phone: "482", REF2.phone: "483", NAT.phone: "482"}
    assert main == "482"
    assert len(queries) == 1
    d.shutdown()


def test_a_code_taken_by_a_concurrent_start_is_replaced(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two starts reserve codes for the same number at once: both saw "482" free, the other
    one's insert won. This one's insert is turned away by the unique index and the number
    gets another code (never none, never the same as the other alert's)."""
    with Session(engine) as s:
        s.add(AckCode(alert_id="other", phone=REF1.phone, code="482", created_at=T0))
        s.commit()
    real_taken = codes._taken
    calls = []

    def before_the_other_committed(session: Session, **kw: object) -> set[tuple[str, str]]:
        calls.append(kw["phones"])
        return set() if len(calls) == 1 else real_taken(session, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(codes, "_taken", before_the_other_committed)
    with Session(engine) as s:
        reserved = codes.reserve_codes(
            s, alert_id="a", phones=[REF1.phone, REF2.phone], preferred="482", now=T0
        )
        s.commit()
        held = s.execute(
            select(AckCode.alert_id, AckCode.code).where(AckCode.phone == REF1.phone)  # type: ignore[call-overload]
        ).all()
    assert calls[0] == [REF1.phone, REF2.phone]  # one query for the whole chain first
    assert reserved[REF2.phone] == "482"
    assert reserved[REF1.phone] not in (None, "482")
    assert sorted(held) == sorted([("other", "482"), ("a", reserved[REF1.phone])])


def test_codes_are_freed_whatever_ends_the_escalation(engine: Engine) -> None:
    d, _rec = make(engine)
    for alert_id in ("acked", "stood", "closed", "exhausted", "running"):
        start(d, alert_id, policy=ONE_SMS)
    d.tick(now=T0)
    with Session(engine) as s:
        d.acknowledge(s, alert_id="acked", by="Opérateur", via="dashboard", now=at(1))
        d.stand_down(s, alert_id="stood", now=at(1), reason="code d'annulation")
        d.close(s, alert_id="closed", now=at(1))
        s.commit()
    assert d.tick(now=at(60)).exhausted == ["exhausted", "running"]
    with Session(engine) as s:
        before = s.execute(
            select(AckCode.code).where(  # type: ignore[call-overload]
                AckCode.alert_id == "running", AckCode.phone == REF1.phone
            )
        ).scalar_one()
        # A chain added to an exhausted alert: it runs again, and REF1 (in the new chain too)
        # takes back the code its first SMS carried.
        d.add_chain(s, alert_id="running", chain=Chain("84", "GN", (REF1, GN84)), now=at(61))
        s.commit()
        open_codes = {
            (r.alert_id, r.phone): r.code
            for r in s.execute(select(AckCode).where(AckCode.released_at.is_(None))).scalars()  # type: ignore[union-attr]
        }
    assert set(open_codes) == {("running", REF1.phone), ("running", GN84.phone)}
    assert open_codes[("running", REF1.phone)] == before
    d.shutdown()


def test_no_code_left_the_sms_goes_out_anyway(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a number really had no code left (here: codes capped at 3 digits and all 900 held),
    the alert still starts and its SMS goes out, saying to use the link or the call."""
    monkeypatch.setattr(codes, "ACK_CODE_MAX_DIGITS", 3)
    with Session(engine) as s:
        s.add_all(
            AckCode(alert_id=f"x{i}", phone=REF1.phone, code=str(i), created_at=T0)
            for i in range(100, 1000)
        )
        s.commit()
    d, rec = make(engine)
    start(d)
    assert d.tick(now=T0).sent == 1
    body = rec.sent[0][2] or ""
    assert "OK" not in body and "en répondant à l'appel (touche 1)" in body
    assert "https://vigie.example.fr/alerts/alert-1" in body and messages.is_gsm7(body)
    with Session(engine) as s:
        d.acknowledge(s, alert_id="alert-1", by="CIC", via="dashboard", now=at(1))
        s.commit()
    d.tick(now=at(1))
    info = rec.sent[-1][2] or ""
    assert "prise en charge par CIC" in info and "()" not in info
    d.shutdown()


# --- 6. priority per number -------------------------------------------------------------------


def _stand_down_all(d: Dispatcher, ids: list[str], now: datetime) -> None:
    with Session(d.engine) as s:
        for alert_id in ids:
            d.stand_down(s, alert_id=alert_id, now=now, reason="code d'annulation")
        s.commit()


def _run_until_idle(d: Dispatcher, since: datetime, *, max_ticks: int = 500) -> TickReport:
    """The clock, by hand: tick at each next due time. Sums the reports."""
    total = TickReport()
    now = since
    for _ in range(max_ticks):
        due = d.sender.next_due_at(now=now)
        if due is None:
            break
        now = max(now, due)
        r = d.tick(now=now)
        for name in ("claimed", "sent", "deferred", "retried", "failed", "skipped"):
            setattr(total, name, getattr(total, name) + getattr(r, name))
    return total


def test_new_alert_is_claimed_before_throttled_stand_downs_which_are_deferred_once(
    engine: Engine,
) -> None:
    d, rec = make(engine, batch_size=20, per_number_max=10, per_number_window_s=60.0)
    ids = [f"fa-{i}" for i in range(40)]
    for alert_id in ids:
        start(d, alert_id, chains=(FALLBACK_ONLY,), policy=ONE_SMS)
    assert d.tick(now=T0).sent + d.tick(now=T0).sent == 40  # first pass: never throttled
    _stand_down_all(d, ids, at(5))
    with Session(engine) as s:
        d.start(
            s,
            brief=brief("new", created_at=at(6)),
            chains=[FALLBACK_ONLY],
            policy=ONE_SMS,
            now=at(6),
        )
        s.commit()
    rec.sent.clear()
    # 40 stand-downs to the fallback are due before the new alert and the batch holds 20.
    first = d.tick(now=at(6))
    assert [(c, to) for c, to, _b, _n in rec.sent] == [("sms", NAT.phone)]
    assert "Vigie SOS" in (rec.sent[0][2] or "")  # the new alert's SMS, nothing else
    assert first.deferred >= 1
    with Session(engine) as s:
        new_row = s.execute(
            select(Notification).where(Notification.alert_id == "new")  # type: ignore[arg-type]
        ).scalar_one()
        assert new_row.sent_at == at(6) and new_row.next_action_at == new_row.due_at
    # The stand-downs: each deferred at most once, claimed at most twice, sent exactly once.
    rest = _run_until_idle(d, at(6))
    total_claims = first.claimed + rest.claimed
    assert first.deferred + rest.deferred <= 40
    assert total_claims <= 1 + 2 * 40, total_claims
    with Session(engine) as s:
        downs = list(
            s.execute(
                select(Notification).where(Notification.kind == KIND_STAND_DOWN)  # type: ignore[arg-type]
            ).scalars()
        )
    assert len(downs) == 40 and {n.status for n in downs} == {SENT}
    sent_ids = [n for c, _to, b, n in rec.sent if "annulée" in (b or "")]
    assert sorted(sent_ids) == sorted(n.id for n in downs)  # each exactly once
    # And the fallback got no more than its limit in any minute (give or take one message).
    times = sorted(n.sent_at for n in downs if n.sent_at is not None)
    for i, t in enumerate(times):
        in_window = [u for u in times[i:] if u < t + timedelta(seconds=60)]
        assert len(in_window) <= 10 + 1, (t, len(in_window))
    d.shutdown()


class GatedNotifier(RecordingNotifier):
    """Stand-down SMS hang (a slow provider) until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.held = 0

    def send_sms(self, *, to: str, body: str, notification_id: int, alert_id: str) -> SendResult:
        if "annulée" in body:
            with self.lock:
                self.held += 1
            self.gate.wait(30)
        return super().send_sms(
            to=to, body=body, notification_id=notification_id, alert_id=alert_id
        )


def test_low_class_sends_never_occupy_the_workers_an_alert_needs(engine: Engine) -> None:
    notifier = GatedNotifier()
    config = DispatchConfig(
        public_url="https://vigie.example.fr", per_number_max=10_000, global_max=10_000
    )
    d = Dispatcher(engine=engine, notifier=notifier, config=config)
    ids = [f"fa-{i}" for i in range(24)]
    for alert_id in ids:
        start(d, alert_id, chains=(FALLBACK_ONLY,), policy=ONE_SMS)
    assert d.tick(now=T0).sent == 24
    _stand_down_all(d, ids, at(5))
    d.tick(now=at(5), wait=False)  # as the clock does: every stand-down worker now hangs
    deadline = time.monotonic() + 10
    while notifier.held < config.low_send_workers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert notifier.held == config.low_send_workers
    try:
        with Session(engine) as s:
            d.start(
                s,
                brief=brief("new", created_at=at(6)),
                chains=[CHAIN_13],
                policy=DEFAULT_POLICY,
                now=at(6),
            )
            s.commit()
        d.run_due(alert_id="new", now=at(6), wait=False)  # the clock's kick after the commit
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with notifier.lock:
                if any(to == REF1.phone for _c, to, _b, _n in notifier.sent):
                    break
            time.sleep(0.01)
        with notifier.lock:
            assert [to for _c, to, _b, _n in notifier.sent[24:]] == [REF1.phone]
        assert notifier.held == config.low_send_workers  # still hanging meanwhile
    finally:
        notifier.gate.set()
    d.shutdown(wait=True)  # the hanging sends finish
    d2 = Dispatcher(engine=engine, notifier=notifier, config=config)
    _run_until_idle(d2, at(100))  # the stand-downs not claimed yet
    downs = collections.Counter(n for _c, _to, b, n in notifier.sent if "annulée" in (b or ""))
    assert len(downs) == 24 and set(downs.values()) == {1}
    d2.shutdown()


def test_rows_carry_their_class(engine: Engine) -> None:
    d, _rec = make(engine)
    start(d)
    d.tick(now=T0)
    with Session(engine) as s:
        d.mark_duress(s, alert_id="alert-1", now=at(1))
        s.commit()
    d.tick(now=at(1))
    with Session(engine) as s:
        d.stand_down(s, alert_id="alert-1", now=at(2), reason="annulation")
        s.commit()
    classes = {(n.kind, n.round_no): n.priority for n in _rows(engine, "alert-1")}
    assert classes == {
        ("alert", 0): PRIORITY_URGENT,
        ("alert", 1): PRIORITY_REPEAT,
        ("duress", 0): PRIORITY_URGENT,
        ("stand_down", 0): PRIORITY_INFO,
    }
    d.shutdown()


def _rows(engine: Engine, alert_id: str) -> list[Notification]:
    with Session(engine) as s:
        return list(
            s.execute(
                select(Notification).where(Notification.alert_id == alert_id)  # type: ignore[arg-type]
            ).scalars()
        )


def test_migration_gives_existing_rows_their_class(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = alembic_config(eng)
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "dispatch_0003")
    t = "2026-11-22 17:04:05.000000"
    with eng.begin() as conn:
        for kind, step, round_no in (
            ("alert", 0, 0), ("alert", 0, 1), ("ack_info", -1, 0), ("duress", -3, 0),
            ("stand_down", -2, 0),
        ):  # fmt: skip
            conn.execute(
                sa.text(
                    "INSERT INTO dispatch_notification (alert_id, kind, chain_index, step_no, "
                    "round_no, contact_id, contact_name, phone, channel, status, due_at, "
                    "next_action_at, attempts, ack_code, provider_rank, created_at, updated_at) "
                    "VALUES ('a', :kind, 0, :step, :round, 1, 'X', '+33100000000', 'sms', "
                    "'planned', :t, :t, 0, '482', 0, :t, :t)"
                ),
                {"kind": kind, "step": step, "round": round_no, "t": t},
            )
    migrate(eng)
    with eng.connect() as conn:
        got = {
            (k, r): p
            for k, r, p in conn.execute(
                sa.text("SELECT kind, round_no, priority FROM dispatch_notification")
            )
        }
        partial = conn.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE name = 'uq_dispatch_ack_code_open'")
        ).scalar_one()
    assert got == {
        ("alert", 0): PRIORITY_URGENT,
        ("alert", 1): PRIORITY_REPEAT,
        ("ack_info", 0): PRIORITY_INFO,
        ("duress", 0): PRIORITY_URGENT,
        ("stand_down", 0): PRIORITY_INFO,
    }
    assert "WHERE released_at IS NULL" in partial
    eng.dispose()


# --- 9. SMS acknowledgement: wrong codes are limited, recorded, and shown ----------------------


def _wrong(code: str) -> str:
    return "OK " + ("111" if code != "111" else "222")


def test_five_wrong_codes_block_the_number_even_for_the_right_code(engine: Engine) -> None:
    d, rec = make(engine)
    start(d)
    d.tick(now=T0)
    code = code_in(rec.sent[0][2])
    d.tick(now=at(30))  # the call to REF1
    call_id = next(n for c, _to, _b, n in rec.sent if c == "voice")
    wrong = [c for c in ("111", "222", "333", "444", "555", "666") if c != code][:5]
    replies = []
    for i, w in enumerate(wrong):
        out, reply = d.sender.handle_inbound_sms(
            from_phone=REF1.phone, to_phone=None, body=f"OK {w}", sid=f"SMw{i}", now=at(40 + i)
        )
        assert out.outcome == "unknown_code" and out.alert_id == "alert-1"
        replies.append(reply or "")
    assert all("code non reconnu" in r for r in replies[:4])
    assert "bloqué 15 min" in replies[4] and "console" in replies[4]
    # The right code, now: refused, and said so.
    out, reply = d.sender.handle_inbound_sms(
        from_phone=REF1.phone, to_phone=None, body=f"OK {code}", sid="SMright", now=at(50)
    )
    assert out.outcome == "code_locked" and "bloqué" in (reply or "")
    assert messages.is_gsm7(reply or "")
    with Session(engine) as s:
        assert d.view(s, alert_id="alert-1").status == "active"  # type: ignore[union-attr]
        kinds = collections.Counter(
            e.kind
            for e in s.execute(
                select(Event).where(Event.alert_id == "alert-1")  # type: ignore[arg-type]
            ).scalars()
        )
        inbound = [e for e in d.timeline(s, alert_id="alert-1") if e.what == "inbound_sms"]
    assert (kinds["wrong_code"], kinds["code_locked"], kinds["code_refused"]) == (5, 1, 1)
    assert [e.status for e in inbound] == ["unknown_code"] * 5 + ["code_locked"]
    # Another number is not blocked by it; the call still acknowledges.
    out, _ = d.sender.handle_inbound_sms(
        from_phone=REF2.phone, to_phone=None, body=f"OK {code}", sid="SMref2", now=at(51)
    )
    assert out.outcome == "not_notified"
    result, _n, _esc = d.sender.handle_digits(notification_id=call_id, digits="1", now=at(52))
    assert result is not None and result.accepted
    d.shutdown()


def test_the_lock_ends_after_the_window(engine: Engine) -> None:
    d, rec = make(engine, sms_ack_max_wrong=3, sms_ack_lock_window_s=600.0)
    start(d)
    d.tick(now=T0)
    code = code_in(rec.sent[0][2])
    for i in range(3):
        d.sender.handle_inbound_sms(
            from_phone=REF1.phone, to_phone=None, body=_wrong(code), sid=f"SMw{i}", now=at(i)
        )
    out, reply = d.sender.handle_inbound_sms(
        from_phone=REF1.phone, to_phone=None, body=f"OK {code}", sid="SMa", now=at(300)
    )
    assert out.outcome == "code_locked" and "bloqué 10 min" in (reply or "")
    # A refused reply counts as a wrong one: at 601 s the replies of 1 s, 2 s and 300 s are
    # still within the 10 minutes.
    out, _ = d.sender.handle_inbound_sms(
        from_phone=REF1.phone, to_phone=None, body=f"OK {code}", sid="SMb", now=at(601)
    )
    assert out.outcome == "code_locked"
    # Once fewer than 3 are left in the window the code works again.
    out, _ = d.sender.handle_inbound_sms(
        from_phone=REF1.phone, to_phone=None, body=f"OK {code}", sid="SMc", now=at(1000)
    )
    assert out.outcome == "acknowledged"
    d.shutdown()


def test_wrong_codes_show_in_french_on_the_console_timeline(engine: Engine) -> None:
    d, rec = make(engine, sms_ack_max_wrong=2)
    start(d)
    d.tick(now=T0)
    code = code_in(rec.sent[0][2])
    for i in range(3):
        d.sender.handle_inbound_sms(
            from_phone=REF1.phone, to_phone=None, body=_wrong(code), sid=f"SMw{i}", now=at(i)
        )
    read = dispatch_timeline.source(d)
    with Session(engine) as s:
        entries = read(s, SimpleNamespace(alert_id="alert-1"))  # type: ignore[arg-type]
    labels = {e.type: e.label for e in entries}
    assert labels["wrong_code"] == "Code de prise en charge erroné reçu par SMS"
    assert labels["code_locked"].startswith("Numéro bloqué pour les réponses SMS")
    assert labels["code_refused"].startswith("Code refusé")
    wrong = [e for e in entries if e.type == "wrong_code"]
    assert (
        wrong[0].detail["to"] == REF1.phone
        and "erroné (1/2 en 15 min)" in wrong[0].detail["detail"]
    )
    d.shutdown()


def test_wrong_codes_go_on_the_most_recent_open_alerts_of_the_number(engine: Engine) -> None:
    d, _rec = make(engine)
    for i in range(5):
        start(d, f"a{i}", chains=(FALLBACK_ONLY,), policy=ONE_SMS)
    d.tick(now=T0)
    with Session(engine) as s:
        d.close(s, alert_id="a4", now=at(1))
        s.commit()
    d.sender.handle_inbound_sms(
        from_phone=NAT.phone, to_phone=None, body="OK 99999", sid="SMx", now=at(2)
    )
    with Session(engine) as s:
        on = sorted(
            s.execute(
                select(Event.alert_id).where(Event.kind == "wrong_code")  # type: ignore[call-overload]
            ).scalars()
        )
        n_inbound = s.execute(select(func.count()).select_from(store.INBOUND)).scalar_one()
    assert on == ["a1", "a2", "a3"] and n_inbound == 1
    d.shutdown()


def test_closing_what_is_over_never_holds_back_a_send(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tick sends what is due before it closes the records of what is over (escalations
    exhausted, verifications timed out). Closing them first cost every step 2-3 ms on
    PostgreSQL, and when that transaction failed no send of the tick went out."""
    d, rec = make(engine)
    start(d, "alert-1")

    def failing(*args: object, **kwargs: object) -> list[str]:
        raise RuntimeError("closing the exhausted escalations failed")

    monkeypatch.setattr(lifecycle, "exhaust_due", failing)
    # As if an escalation were over (SQLite looks before it takes the write lock).
    monkeypatch.setattr(lifecycle, "any_exhaust_due", lambda *a, **k: True)
    with pytest.raises(RuntimeError, match="exhausted"):
        d.tick(now=T0)
    assert [(channel, to) for channel, to, _body, _id in rec.sent] == [("sms", REF1.phone)]
    d.shutdown()


def test_a_sweep_with_nothing_due_leaves_the_write_lock_to_the_alerts(tmp_path: Path) -> None:
    """On SQLite every alert's commit needs the database's one write lock. The clock sweeps
    every second, and most sweeps find nothing to send and nothing to close: such a sweep
    must not take the lock (it took it three times, and a press arriving meanwhile waited).
    A step that is due is still claimed and sent."""
    eng = sqlite_engine(tmp_path)
    d, rec = make(eng)
    start(d, "alert-1")
    d.tick(now=T0)  # the first SMS; the call comes 30 s later
    assert len(rec.sent) == 1
    idle_sweep = partial(d.tick, now=T0 + timedelta(seconds=10), wait=False)
    assert done_while_write_locked(eng, idle_sweep), "an idle sweep waited for the write lock"
    report = d.tick(now=T0 + timedelta(seconds=30))
    assert report.claimed == 1 and [c for c, *_ in rec.sent] == ["sms", "voice"]
    d.shutdown()
