"""What the server's /healthz says about the telephony provider: the real ``twilio`` client
against the fake Twilio, and the outcome each request leaves in ``ProviderHealth``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from dispatch.channels.base import PermanentSendError, ProviderHealth, TransientSendError
from dispatch.channels.simulated import SimulatedNotifier
from dispatch.channels.twilio import TwilioNotifier
from tests.fakes.fake_twilio import FakeTwilio

TO = "+33465710013"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    f = FakeTwilio(timeout_hold_s=1.5).start()
    try:
        yield f
    finally:
        f.stop()


def notifier(fake: FakeTwilio, *, token: str | None = None, **kw: float) -> TwilioNotifier:
    return TwilioNotifier(
        account_sid=fake.account_sid,
        auth_token=token if token is not None else fake.auth_token,
        from_number=fake.from_number,
        api_base=fake.url,
        public_url="http://127.0.0.1:9",
        health=ProviderHealth(),
        **kw,
    )


def send(n: TwilioNotifier) -> None:
    n.send_sms(to=TO, body="Alerte SOS. Répondez OK 482", notification_id=1, alert_id="a-1")


def test_a_new_health_has_seen_no_request() -> None:
    assert ProviderHealth().snapshot() == {
        "last_request_at": None,
        "last_ok": None,
        "last_error": None,
        "credentials_rejected": False,
    }


def test_accepted_request_is_recorded(fake: FakeTwilio) -> None:
    n = notifier(fake)
    before = datetime.now(UTC)
    send(n)
    state = n.health.snapshot()
    assert state["last_ok"] is True and state["last_error"] is None
    assert not state["credentials_rejected"]
    at = datetime.fromisoformat(state["last_request_at"])
    assert at >= before.replace(microsecond=0)


@pytest.mark.parametrize(("mode", "code"), [("500", "20500"), ("429", "20429")])
def test_transient_errors_are_recorded_but_not_a_credential_problem(
    fake: FakeTwilio, mode: str, code: str
) -> None:
    n = notifier(fake)
    send(n)
    fake.inject(mode)
    with pytest.raises(TransientSendError):
        send(n)
    state = n.health.snapshot()
    assert state["last_ok"] is False and code in state["last_error"]
    assert state["credentials_rejected"] is False


def test_timeout_is_transient(fake: FakeTwilio) -> None:
    n = notifier(fake, http_timeout_s=0.5)
    fake.inject("timeout")
    with pytest.raises(TransientSendError):
        send(n)
    state = n.health.snapshot()
    assert state["last_ok"] is False and state["credentials_rejected"] is False


def test_rejected_credentials_stay_rejected_until_a_request_succeeds(fake: FakeTwilio) -> None:
    n = notifier(fake, token="not-the-token")
    with pytest.raises(PermanentSendError) as err:
        send(n)
    assert err.value.status == 401 and err.value.code == "20003"
    assert n.health.credentials_rejected
    # A lookup (the reconciliation after a crash) fails the same way: still rejected.
    with pytest.raises(TransientSendError):
        n.find_accepted(channel="sms", to=TO, body_sha256="x", since=datetime.now(UTC))
    assert n.health.credentials_rejected
    # An unrelated transient error does not clear it either.
    fake.auth_token = "not-the-token"  # Twilio now accepts this token
    fake.inject("500")
    with pytest.raises(TransientSendError):
        send(n)
    assert n.health.credentials_rejected
    send(n)
    assert not n.health.credentials_rejected
    assert n.health.snapshot()["last_ok"] is True


def test_credentials_check_fetches_the_account(fake: FakeTwilio) -> None:
    good = notifier(fake)
    assert good.check_credentials() is True
    assert fake.account_checks == 1
    assert good.health.snapshot()["last_ok"] is True
    bad = notifier(fake, token="not-the-token")
    assert bad.check_credentials() is False
    assert bad.health.credentials_rejected
    assert "20003" in bad.health.snapshot()["last_error"]
    fake.inject("500", kind="account")
    assert good.check_credentials() is False
    assert not good.health.credentials_rejected
    # No SMS or call was sent by any of these checks.
    assert fake.requests == [] and fake.sms == [] and fake.calls == []


def test_simulated_sends_are_recorded_as_accepted() -> None:
    sim = SimulatedNotifier(report_delivery=False)
    sim.send_sms(to=TO, body="x", notification_id=1, alert_id="a-1")
    assert sim.health.snapshot()["last_ok"] is True
    sim.close()
