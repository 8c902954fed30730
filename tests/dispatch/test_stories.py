"""End-to-end stories: the real Twilio client, a fake Twilio server, signed webhooks, a
controlled clock. Every story runs on SQLite and on PostgreSQL, and fails on any SMS or call
nobody expected (harness teardown)."""

from __future__ import annotations

import re
import threading

from dispatch.messages import is_gsm7
from dispatch.models import CANCELLED, FAILED, SENT
from dispatch.policy import EscalationPolicy, Step
from tests.dispatch.conftest import CHAIN_13, CHAIN_84, GN84, NAT, REF1, REF2, Harness


def code_of(body: str) -> str:
    m = re.search(r"OK (\d+) pour", body)
    assert m, body
    return m.group(1)


def test_no_ack_sms_then_call_then_second_contact(harness: Harness) -> None:
    h = harness
    assert h.start()
    h.at(0, alert_id="alert-1")  # the first SMS goes out at once, not at the next tick
    sms = h.phones.expect_sms(REF1.phone, contains=["SOS", "Infirmier(e) Camille", "OK "])
    assert is_gsm7(sms.body)
    assert sms.validity_period == "300"
    assert sms.status_callback == f"{h.app_url}/twilio/status"
    sms.deliver()  # "delivered" is not an acknowledgement
    h.at(29)
    assert h.phones.unexpected() == []
    h.at(30)
    call = h.phones.expect_call(REF1.phone)
    call.answer()
    assert any("Appuyez sur 1" in s for s in call.said)
    assert len(call.said) >= 2 and call.said[0] == call.said[1]  # read twice
    h.at(89)
    assert h.phones.unexpected() == []
    h.at(90)
    h.phones.expect_sms(REF2.phone, contains=["SOS"])
    h.phones.expect_call(REF2.phone)
    view = h.dispatcher.view(h.session(), alert_id="alert-1")
    assert view is not None and view.status == "active"


def test_ack_by_sms_stops_escalation_and_tells_everyone(harness: Harness) -> None:
    h = harness
    h.start()
    h.at(0)
    sms1 = h.phones.expect_sms(REF1.phone)
    h.at(30)
    h.phones.expect_call(REF1.phone).no_answer()  # no answer: contact 2 called at once
    h.at(30)
    sms2 = h.phones.expect_sms(REF2.phone)
    h.phones.expect_call(REF2.phone)
    code = code_of(sms2.body)
    # A reply from a number that was not notified changes nothing (and is recorded).
    h.phones.send_sms("+33699999999", f"OK {code}")
    assert h.dispatcher.view(h.session(), alert_id="alert-1").status == "active"  # type: ignore[union-attr]
    # "ok 4 8 2" with odd case and spaces acknowledges.
    h.clock.set(h.t0 + __import__("datetime").timedelta(seconds=40))
    answer = sms2.reply(f"  ok {' '.join(code)} ")
    assert "<Response" in answer
    view = h.dispatcher.view(h.session(), alert_id="alert-1")
    assert view is not None and view.status == "acknowledged" and view.acked_via == "sms"
    assert h.hooks.acked == [("alert-1", REF2.name, REF2.phone, "sms")]
    assert h.hooks.after_acked == ["alert-1"]
    h.at(40)
    h.phones.expect_sms(REF1.phone, contains=["prise en charge par", REF2.name])
    h.phones.expect_sms(REF2.phone, contains=["vous avez pris en charge"])
    # Nothing more, ever.
    for t in (90, 150, 300, 600):
        h.at(t)
    assert h.phones.unexpected() == []
    # A second reply gets "already taken", changes nothing.
    again = sms1.reply(f"OK {code_of(sms1.body)}")
    assert "déjà prise en charge" in again or "deja" in again.lower()
    statuses = {n.status for n in h.notifications() if n.kind == "alert" and n.step_no >= 2}
    assert CANCELLED in statuses


def test_ack_by_key_1(harness: Harness) -> None:
    h = harness
    h.start()
    h.at(0)
    h.phones.expect_sms(REF1.phone)
    h.at(30)
    call = h.phones.expect_call(REF1.phone).press("1")
    assert "pris en charge" in call.last_said
    call.hangup()  # "completed" after the ack: nothing pulled forward
    view = h.dispatcher.view(h.session(), alert_id="alert-1")
    assert view is not None and view.status == "acknowledged" and view.acked_via == "voice"
    h.at(31)
    h.phones.expect_sms(REF1.phone, contains=["vous avez pris en charge"])
    for t in (90, 150, 500):
        h.at(t)


def test_voicemail_is_not_an_ack_and_moves_on(harness: Harness) -> None:
    h = harness
    h.start()
    h.at(0)
    h.phones.expect_sms(REF1.phone)
    h.at(30)
    call = h.phones.expect_call(REF1.phone).answer()
    call.hangup()  # completed without the digit 1 (a voicemail): not reached
    h.at(31)
    h.phones.expect_sms(REF2.phone)
    h.phones.expect_call(REF2.phone)
    assert h.dispatcher.view(h.session(), alert_id="alert-1").status == "active"  # type: ignore[union-attr]


def test_sms_and_key_at_the_same_instant_exactly_one_ack(harness: Harness) -> None:
    h = harness
    h.start()
    h.at(0)
    sms = h.phones.expect_sms(REF1.phone)
    h.at(30)
    call = h.phones.expect_call(REF1.phone).answer()
    barrier = threading.Barrier(2)
    results: dict[str, str] = {}

    def by_sms() -> None:
        barrier.wait()
        results["sms"] = sms.reply(f"OK {code_of(sms.body)}")

    def by_key() -> None:
        barrier.wait()
        call.press("1")
        results["voice"] = call.last_said

    threads = [threading.Thread(target=by_sms), threading.Thread(target=by_key)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(h.hooks.acked) == 1, h.hooks.acked
    winner = h.hooks.acked[0][3]
    view = h.dispatcher.view(h.session(), alert_id="alert-1")
    assert view is not None and view.status == "acknowledged" and view.acked_via == winner
    if winner == "voice":
        assert "pris en charge" in results["voice"] and "déjà" in results["sms"]
    else:
        assert "déjà" in results["voice"]
    h.at(31)
    # Exactly one "taken" message to the one notified number (the acker).
    h.phones.expect_sms(REF1.phone, contains=["vous avez pris en charge"])
    h.at(200)


def test_cancel_pin_stands_down_everyone_notified(harness: Harness) -> None:
    h = harness
    h.start()
    h.at(0)
    h.phones.expect_sms(REF1.phone)
    with h.session() as s:
        assert h.dispatcher.stand_down(
            s, alert_id="alert-1", now=h.clock(), reason="code d'annulation"
        )
        s.commit()
    h.at(5)
    h.phones.expect_sms(REF1.phone, contains=["annulée"])
    for t in (30, 90, 150, 500):
        h.at(t)
    assert h.dispatcher.view(h.session(), alert_id="alert-1").status == "stood_down"  # type: ignore[union-attr]


def test_duress_keeps_escalating_and_tells_everyone(harness: Harness) -> None:
    h = harness
    h.start()
    h.at(0)
    h.phones.expect_sms(REF1.phone)
    h.clock.set(h.t0.replace(second=h.t0.second + 10))
    with h.session() as s:
        assert h.dispatcher.mark_duress(s, alert_id="alert-1", now=h.clock())
        assert not h.dispatcher.mark_duress(s, alert_id="alert-1", now=h.clock())  # once
        s.commit()
    h.at(10)
    h.phones.expect_sms(REF1.phone, contains=["CONTRAINTE", "continue"])
    h.at(30)
    call = h.phones.expect_call(REF1.phone).answer()
    assert any("contrainte" in s for s in call.said)
    h.at(90)
    later = h.phones.expect_sms(REF2.phone, contains=["CONTRAINTE"])  # later contacts too
    assert is_gsm7(later.body)
    h.phones.expect_call(REF2.phone)


def test_twilio_500_then_success_retried_without_delaying_next_step(harness: Harness) -> None:
    h = harness
    h.fake.inject("500", times=2, kind="sms")
    h.start()
    r = h.at(0)
    assert r.retried == 1
    assert h.phones.unexpected() == []
    h.at(1)  # first retry after 1 s: 500 again
    h.at(2)  # not yet (second backoff: 2 s)
    assert len(h.fake.requests) == 2
    h.at(3)  # third attempt succeeds
    h.phones.expect_sms(REF1.phone)
    # The call of step 2 is still at 30 s, on time.
    h.at(30)
    h.phones.expect_call(REF1.phone)
    sms_rows = [n for n in h.notifications() if n.channel == "sms" and n.step_no == 0]
    assert sms_rows[0].attempts == 2 and sms_rows[0].status == SENT


def test_timeout_and_429_are_retried(harness: Harness) -> None:
    h = harness
    h.fake.inject("timeout", times=1, kind="sms")
    h.fake.inject("429", times=1, kind="sms")
    h.start()
    assert h.at(0).retried == 1
    assert h.at(1).retried == 1
    h.at(3)
    h.phones.expect_sms(REF1.phone)


def test_invalid_number_moves_to_next_contact_at_once(harness: Harness) -> None:
    h = harness
    h.fake.invalid_numbers.add(REF1.phone)
    h.start()
    r = h.at(0)  # SMS to REF1: 21211 → call to REF1 pulled forward → 21211 → contact 2
    assert r.failed == 1
    h.at(0)
    h.at(0)
    h.phones.expect_sms(REF2.phone)
    h.phones.expect_call(REF2.phone)
    failed = [n for n in h.notifications() if n.status == FAILED]
    assert {n.error_code for n in failed} == {"21211"}


def test_undelivered_callback_moves_on_and_callbacks_never_go_backwards(harness: Harness) -> None:
    h = harness
    h.start()
    h.at(0)
    sms = h.phones.expect_sms(REF1.phone)
    assert sms.status("undelivered", error_code="30003") == 204
    assert sms.status("sent") == 204  # late, out of order: ignored
    assert sms.status("undelivered", error_code="30003") == 204  # duplicate: ignored
    row = next(n for n in h.notifications() if n.provider_sid == sms.sid)
    assert row.provider_status == "undelivered" and row.status == FAILED
    h.at(1)
    h.phones.expect_call(REF1.phone)  # voice pulled forward from 30 s to now


def test_bad_signature_is_403_and_changes_nothing(harness: Harness) -> None:
    h = harness
    h.start()
    h.at(0)
    sms = h.phones.expect_sms(REF1.phone)
    code = code_of(sms.body)
    params = {"From": REF1.phone, "To": h.fake.from_number, "Body": f"OK {code}"}
    r = h.fake.post_signed(f"{h.app_url}/twilio/sms", params, signature="bad")
    assert r.status_code == 403
    r = h.fake.post_signed(f"{h.app_url}/twilio/sms", params, signature="")
    assert r.status_code == 403
    # Signed over another URL (what a proxy-unaware check would use): refused too.
    other = h.fake.sign("http://internal:8000/twilio/sms", params)
    assert h.fake.post_signed(f"{h.app_url}/twilio/sms", params, signature=other).status_code == 403
    status = {"MessageSid": sms.sid, "MessageStatus": "failed"}
    assert (
        h.fake.post_signed(f"{h.app_url}/twilio/status", status, signature="x").status_code == 403
    )
    assert h.dispatcher.view(h.session(), alert_id="alert-1").status == "active"  # type: ignore[union-attr]
    assert all(n.status != FAILED for n in h.notifications())


def test_ambiguous_border_two_chains_first_ack_wins(harness: Harness) -> None:
    h = harness
    h.start(chains=(CHAIN_13, CHAIN_84))
    h.at(0)
    s13 = h.phones.expect_sms(REF1.phone)
    h.phones.expect_sms(GN84.phone)
    h.at(30)
    h.phones.expect_call(REF1.phone)
    h.phones.expect_call(GN84.phone)
    h.at(90)
    h.phones.expect_sms(REF2.phone)
    h.phones.expect_call(REF2.phone)
    # The national fallback ends both chains: one SMS, not two.
    h.phones.expect_sms(NAT.phone)
    h.phones.expect_call(NAT.phone)
    s13.reply(f"OK {code_of(s13.body)}")
    h.at(91)
    for phone in (REF1.phone, REF2.phone, GN84.phone, NAT.phone):
        h.phones.expect_sms(phone, contains=["charge"])
    h.at(400)


def test_add_chain_for_a_moving_alert(harness: Harness) -> None:
    h = harness
    h.start()
    h.at(0)
    h.phones.expect_sms(REF1.phone)
    h.clock.set(h.t0.replace(second=h.t0.second + 20))
    with h.session() as s:
        assert h.dispatcher.add_chain(s, alert_id="alert-1", chain=CHAIN_84, now=h.clock())
        assert not h.dispatcher.add_chain(
            s, alert_id="alert-1", chain=CHAIN_84, now=h.clock()
        )  # same chain
        s.commit()
    h.at(20)
    h.phones.expect_sms(GN84.phone)  # the new chain starts at its step 0, now
    h.at(30)
    h.phones.expect_call(REF1.phone)
    h.at(50)
    h.phones.expect_call(GN84.phone)


def test_exhausted_chain_stays_open_and_loud(harness: Harness) -> None:
    h = harness
    policy = EscalationPolicy(
        steps=(
            Step(after_s=0, contact=1, channels=("sms",)),
            Step(after_s=60, contact=2, channels=("sms",)),
        ),
        repeat=1,
    )
    short = CHAIN_13.__class__("13", "PN", (REF1, NAT))
    h.start(chains=(short,), policy=policy)
    h.at(0)
    h.phones.expect_sms(REF1.phone)
    h.at(60)
    h.phones.expect_sms(NAT.phone)
    h.at(120)  # the repeat
    h.phones.expect_sms(REF1.phone)
    h.at(180)
    h.phones.expect_sms(NAT.phone)
    h.at(239)
    assert h.hooks.exhausted == []
    h.at(240)
    assert h.hooks.exhausted == ["alert-1"]
    with h.session() as s:
        assert h.dispatcher.exhausted(s) == ["alert-1"]
    h.at(1000)
    # Still acknowledgeable.
    with h.session() as s:
        result = h.dispatcher.acknowledge(
            s, alert_id="alert-1", by="Opérateur CIC", via="dashboard", now=h.clock()
        )
        s.commit()
    assert result.accepted
    h.at(1001)
    h.phones.expect_sms(REF1.phone, contains=["Opérateur CIC"])
    h.phones.expect_sms(NAT.phone, contains=["Opérateur CIC"])


def test_close_is_silent(harness: Harness) -> None:
    h = harness
    h.start()
    h.at(0)
    h.phones.expect_sms(REF1.phone)
    with h.session() as s:
        assert h.dispatcher.close(s, alert_id="alert-1", now=h.clock())
        s.commit()
    for t in (30, 90, 150, 500):
        h.at(t)


def test_start_is_idempotent(harness: Harness) -> None:
    h = harness
    assert h.start()
    assert not h.start()
    h.at(0)
    h.at(0)
    h.phones.expect_sms(REF1.phone)


def test_timeline_shows_everything(harness: Harness) -> None:
    h = harness
    h.start()
    h.at(0)
    sms = h.phones.expect_sms(REF1.phone).deliver()
    sms.reply(f"OK {code_of(sms.body)}")
    h.at(1)
    h.phones.expect_sms(REF1.phone, contains=["vous avez"])
    with h.session() as s:
        entries = h.dispatcher.timeline(s, alert_id="alert-1")
    whats = [e.what for e in entries]
    assert "started" in whats and "acknowledged" in whats and "inbound_sms" in whats
    sent = [e for e in entries if e.what == "alert_sms" and e.provider_sid == sms.sid]
    assert sent and sent[0].status == "delivered" and sent[0].to_phone == REF1.phone
    assert any(e.what == "delivery" and e.status == "delivered" for e in entries)


def test_call_answered_after_someone_acked_says_so(harness: Harness) -> None:
    h = harness
    h.start()
    h.at(0)
    sms = h.phones.expect_sms(REF1.phone)
    h.at(30)
    call = h.phones.expect_call(REF1.phone)  # ringing…
    sms.reply(f"OK {code_of(sms.body)}")  # …meanwhile the SMS reply wins
    call.answer()
    assert "déjà été prise en charge" in call.last_said and call.gather_action is None
    call.hangup()  # completed without a key: nothing is pulled forward, the alert is taken
    h.at(31)
    h.phones.expect_sms(REF1.phone, contains=["vous avez pris en charge"])
    h.at(500)
    with h.session() as s:
        inbound = [
            e for e in h.dispatcher.timeline(s, alert_id="alert-1") if e.what == "inbound_sms"
        ]
    assert [e.status for e in inbound] == ["acknowledged"]


def test_reply_from_a_stranger_is_recorded_and_changes_nothing(harness: Harness) -> None:
    h = harness
    h.start()
    h.at(0)
    sms = h.phones.expect_sms(REF1.phone)
    assert h.phones.send_sms("+33699999999", f"OK {code_of(sms.body)}") == (
        '<?xml version="1.0" encoding="UTF-8"?><Response />'
    )
    with h.session() as s:
        assert h.dispatcher.view(s, alert_id="alert-1").status == "active"  # type: ignore[union-attr]
        inbound = [
            e for e in h.dispatcher.timeline(s, alert_id="alert-1") if e.what == "inbound_sms"
        ]
    assert [(e.to_phone, e.status) for e in inbound] == [("+33699999999", "unknown_sender")]


def test_wrong_codes_block_sms_acknowledgement_from_that_number(harness: Harness) -> None:
    """900 tries from a notified number used to find the code in under a minute: after 5 wrong
    codes the number's code replies are refused (the right one too) and it is told to use the
    call or the console; the call still acknowledges."""
    h = harness
    h.start()
    h.at(0)
    sms = h.phones.expect_sms(REF1.phone)
    code = code_of(sms.body)
    guesses = [g for g in ("100", "101", "102", "103", "104", "105") if g != code][:5]
    answers = [sms.reply(f"OK {g}") for g in guesses]
    assert all("code non reconnu" in a for a in answers[:4])
    assert "bloqué 15 min" in answers[4]
    answer = sms.reply(f"OK {code}")
    assert "bloqué" in answer and "console" in answer
    assert h.dispatcher.view(h.session(), alert_id="alert-1").status == "active"  # type: ignore[union-attr]
    with h.session() as s:
        whats = [e.what for e in h.dispatcher.timeline(s, alert_id="alert-1")]
    assert whats.count("wrong_code") == 5 and whats.count("code_refused") == 1
    assert whats.count("code_locked") == 1 and whats.count("inbound_sms") == 6
    h.at(30)
    call = h.phones.expect_call(REF1.phone).press("1")
    assert "pris en charge" in call.last_said
    h.at(31)
    h.phones.expect_sms(REF1.phone, contains=["vous avez pris en charge"])
