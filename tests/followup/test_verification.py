"""Automatic alarms (fall, no_motion) call the worker's own phone first; everything else, and
every failure of that call, goes to the referent chain. The fake Twilio fails the test on any
SMS or call nobody expected."""

from __future__ import annotations

from dispatch.models import VERIFY_CONFIRMED, VERIFY_ESCALATED
from tests.followup.conftest import REFERENT, VERIFY_S, WORKER_PHONE, Stack


def test_worker_presses_1_no_referent_is_notified(stack: Stack) -> None:
    s = stack
    alert_id = s.raise_alert("fall")
    call = s.phones.expect_call(WORKER_PHONE)
    call.press("1")
    assert any("appuyez sur 1" in said.lower() for said in call.said)
    assert "annulée" in call.last_said
    call.hangup()  # "completed" after the key 1: not a failure
    # The deadline passes, the whole policy's time passes: nobody is called or texted.
    for t in (VERIFY_S, VERIFY_S + 30, VERIFY_S + 600):
        s.at(t)
    assert s.phones.unexpected() == []
    alert = s.alert(alert_id)
    assert alert.state == "cancelled" and alert.outcome == "false_alarm"
    assert "verified_false_alarm" in s.event_types(alert_id)
    assert [c["alert_id"] for c in s.commands("alert.cancelled")] == [alert_id]
    v = s.dispatcher.verification(alert_id=alert_id)
    assert v is not None and v.status == VERIFY_CONFIRMED
    view = s.dispatcher.view(s.dispatcher.session(), alert_id=alert_id)
    assert view is not None and view.status == "stood_down"


def test_nobody_answers_the_chain_is_notified_at_the_deadline(stack: Stack) -> None:
    s = stack
    alert_id = s.raise_alert("no_motion")
    s.phones.expect_call(WORKER_PHONE)  # rings, nobody picks up, no callback at all
    s.at(VERIFY_S - 1)
    assert s.phones.unexpected() == []
    s.at(VERIFY_S)
    s.phones.expect_sms(REFERENT, contains=["IMMOBILIT", "OK "])
    v = s.dispatcher.verification(alert_id=alert_id)
    assert v is not None and v.status == VERIFY_ESCALATED and v.reason == "timeout"
    assert s.alert(alert_id).state == "open"


def test_a_failed_verification_call_escalates_at_once(stack: Stack) -> None:
    s = stack
    for how in ("no_answer", "busy", "voicemail", "key_2"):
        alert_id = s.raise_alert("fall")
        call = s.phones.expect_call(WORKER_PHONE)
        if how == "no_answer":
            call.no_answer()
        elif how == "busy":
            call.busy()
        elif how == "voicemail":
            call.answer()
            call.hangup()  # completed without the key 1
        else:
            call.press("2")
            assert "alertés" in call.last_said
        s.at(1)  # long before the 30 s deadline
        s.phones.expect_sms(REFERENT, contains=["CHUTE", alert_id])
        v = s.dispatcher.verification(alert_id=alert_id)
        assert v is not None and v.status == VERIFY_ESCALATED, how
        assert s.alert(alert_id).state == "open"


def test_invalid_worker_number_escalates_at_once(stack: Stack) -> None:
    s = stack
    s.fake.invalid_numbers.add(WORKER_PHONE)
    alert_id = s.raise_alert("fall")
    s.at(0)  # the pulled-forward SMS
    s.phones.expect_sms(REFERENT, contains=["CHUTE"])
    v = s.dispatcher.verification(alert_id=alert_id)
    assert v is not None and v.reason == "call_failed"


def test_provider_error_on_the_verification_call_is_not_retried(stack: Stack) -> None:
    s = stack
    s.fake.inject("500", times=1, kind="call")
    alert_id = s.raise_alert("fall")
    s.at(0)
    s.phones.expect_sms(REFERENT, contains=["CHUTE"])
    assert [r["kind"] for r in s.fake.requests].count("call") == 1
    assert s.alert(alert_id).state == "open"


def test_key_1_after_the_deadline_does_not_stand_down(stack: Stack) -> None:
    s = stack
    alert_id = s.raise_alert("fall")
    call = s.phones.expect_call(WORKER_PHONE).answer()  # picks up, hesitates…
    s.at(VERIFY_S)
    s.phones.expect_sms(REFERENT)
    call.press("1")  # … and presses 1 after the deadline
    assert "déjà été transmise" in call.last_said
    assert s.alert(alert_id).state == "open"
    view = s.dispatcher.view(s.dispatcher.session(), alert_id=alert_id)
    assert view is not None and view.status == "active"


def test_sos_is_never_verified(stack: Stack) -> None:
    s = stack
    for kind in ("sos", "sos_silent"):
        alert_id = s.raise_alert(kind)
        s.phones.expect_sms(REFERENT, contains=[alert_id])  # at once, no call to the worker
        assert s.dispatcher.verification(alert_id=alert_id) is None
    assert not any(c.to == WORKER_PHONE for c in s.fake.calls)


def test_duress_is_never_verified(stack: Stack) -> None:
    s = stack
    alert_id = s.raise_alert("fall", duress=True, flags=["duress"])
    s.phones.expect_sms(REFERENT, contains=["CONTRAINTE"])
    assert s.dispatcher.verification(alert_id=alert_id) is None
    assert not any(c.to == WORKER_PHONE for c in s.fake.calls)


def test_duress_pin_during_the_verification_escalates_at_once(stack: Stack) -> None:
    s = stack
    alert_id = s.raise_alert("fall")
    s.phones.expect_call(WORKER_PHONE)
    s.clock.set(s.clock())
    with s.dispatcher.session() as session:
        assert s.dispatcher.mark_duress(session, alert_id=alert_id, now=s.clock())
        session.commit()
    s.at(1)
    s.phones.expect_sms(REFERENT, contains=["CONTRAINTE"])
    v = s.dispatcher.verification(alert_id=alert_id)
    assert v is not None and v.reason == "duress"
