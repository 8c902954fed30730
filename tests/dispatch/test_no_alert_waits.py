"""No worker's alert ever waits on another: acknowledgement codes that cannot run out.
Explicit ``now``, in-memory notifier, SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, select, update
from sqlmodel import Session

from dispatch import messages, service
from dispatch.models import (
    SENT,
    AckCode,
    Notification,
)
from dispatch.policy import DEFAULT_POLICY, EscalationPolicy, Step
from dispatch.schemas import Chain
from tests.dispatch.conftest import CHAIN_13, GN84, NAT, REF1, T0, brief
from tests.dispatch.test_units import at, make, start

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
            service.start(
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
        assert d.start(s, brief("new", created_at=now), [CHAIN_13], DEFAULT_POLICY, now)
        s.commit()
    # The first run of due work sends it, like for any other alert (and exhausts the old ones).
    report = d.tick(now)
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
        assert all(service.parse_ack(f"OK {c}") == ("code", c) for c in held)
        # The exhausted ones released theirs, but none was given again.
        everything = list(
            s.execute(select(AckCode.code).where(AckCode.phone == NAT.phone)).scalars()  # type: ignore[call-overload]
        )
        assert len(everything) == 2001 == len(set(everything))
        old_code = s.execute(
            select(AckCode.code).where(AckCode.alert_id == "old-7")  # type: ignore[call-overload]
        ).scalar_one()
    # The fallback's turn (150 s): its SMS carries its own code, which acknowledges.
    d.tick(at(150))
    nat_sms = [b for c, to, b, _ in rec.sent if c == "sms" and to == NAT.phone]
    assert len(nat_sms) == 1
    nat_code = code_in(nat_sms[0])
    # A late reply to an exhausted alert still acknowledges that one (its code was not reused).
    out, _ = d.handle_inbound_sms(
        from_phone=NAT.phone, to_phone=None, body=f"ok {old_code}", sid="SMlate", now=at(151)
    )
    assert (out.outcome, out.alert_id) == ("acknowledged", "old-7")
    out, _ = d.handle_inbound_sms(
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
        codes = service._reserve_codes(
            s, alert_id="a", phones=[REF1.phone, NAT.phone], preferred="482", now=T0
        )
        s.commit()
    assert codes[REF1.phone] == "482"  # free for REF1: the alert's code
    long_code = codes[NAT.phone]
    assert long_code is not None and len(long_code) == 4
    assert service.parse_ack(f"OK {long_code}") == ("code", long_code)
    assert service.parse_ack(" ".join(long_code)) == ("code", long_code)


def test_codes_are_freed_whatever_ends_the_escalation(engine: Engine) -> None:
    d, _rec = make(engine)
    for alert_id in ("acked", "stood", "closed", "exhausted", "running"):
        start(d, alert_id, policy=ONE_SMS)
    d.tick(T0)
    with Session(engine) as s:
        d.acknowledge(s, "acked", "Opérateur", "dashboard", at(1))
        d.stand_down(s, "stood", at(1), "code d'annulation")
        d.close(s, "closed", at(1))
        s.commit()
    assert d.tick(at(60)).exhausted == ["exhausted", "running"]
    with Session(engine) as s:
        before = s.execute(
            select(AckCode.code).where(  # type: ignore[call-overload]
                AckCode.alert_id == "running", AckCode.phone == REF1.phone
            )
        ).scalar_one()
        # A chain added to an exhausted alert: it runs again, and REF1 (in the new chain too)
        # takes back the code its first SMS carried.
        d.add_chain(s, "running", Chain("84", "GN", (REF1, GN84)), at(61))
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
    monkeypatch.setattr(service, "ACK_CODE_MAX_DIGITS", 3)
    with Session(engine) as s:
        s.add_all(
            AckCode(alert_id=f"x{i}", phone=REF1.phone, code=str(i), created_at=T0)
            for i in range(100, 1000)
        )
        s.commit()
    d, rec = make(engine)
    start(d)
    assert d.tick(T0).sent == 1
    body = rec.sent[0][2] or ""
    assert "OK" not in body and "en répondant à l'appel (touche 1)" in body
    assert "https://vigie.example.fr/alerts/alert-1" in body and messages.is_gsm7(body)
    with Session(engine) as s:
        d.acknowledge(s, "alert-1", "CIC", "dashboard", at(1))
        s.commit()
    d.tick(at(1))
    info = rec.sent[-1][2] or ""
    assert "prise en charge par CIC" in info and "()" not in info
    d.shutdown()
