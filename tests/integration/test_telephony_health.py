"""``GET /healthz`` says which telephony runs and how the provider's last request went: 200 on
transient provider errors (5xx, 429), 503 while the provider rejects our credentials (Twilio
401 / 20003). A real ``vigie server``, a real Mosquitto, the official ``twilio`` client and the
fake Twilio."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.fake_twilio import FakeTwilio
from tests.support import Device, ServerProcess, add_device, alert_payload, server_env, wait_until
from vigie.brokers.mosquitto import LocalMosquitto, free_port

NATIONAL = "+33199000000"
DIRECTORY = f"""\
version: 1
departements: {{}}
national_fallback:
  - name: "Permanence nationale"
    phone: "{NATIONAL}"
escalation:
  steps:
    - {{after_s: 0, contact: 1, channels: [sms]}}
  repeat: 0
"""


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """The provider's state lives in the server process, not in the database: SQLite only."""
    return f"sqlite:///{tmp_path / 'vigie.db'}"


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    fake = FakeTwilio().start()
    try:
        yield fake
    finally:
        fake.stop()


def twilio_env(
    broker: LocalMosquitto, db_url: str, tmp_path: Path, twilio: FakeTwilio, port: int, **extra: str
) -> dict[str, str]:
    directory = tmp_path / "referents.yaml"
    directory.write_text(DIRECTORY, encoding="utf-8")
    settings = {
        "VIGIE_REFERENTS_FILE": str(directory),
        "VIGIE_TELEPHONY": "twilio",
        "VIGIE_TWILIO_ACCOUNT_SID": twilio.account_sid,
        "VIGIE_TWILIO_AUTH_TOKEN": twilio.auth_token,
        "VIGIE_TWILIO_FROM": twilio.from_number,
        "VIGIE_TWILIO_API_BASE": twilio.url,
        "VIGIE_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    return server_env(broker, db_url, **{**settings, **extra})


def provider(server: ServerProcess) -> tuple[int, dict[str, Any]]:
    status, body = server.health()
    return status, body.get("provider") or {}


def test_healthz_says_the_telephony_is_simulated(server: ServerProcess) -> None:
    status, body = server.health()
    assert status == 200
    # The keys of operations.md stay; the 1.1 ones are added.
    assert body["status"] == "ok" and body["database"] is True and body["broker"] is True
    assert body["telephony"] == "simulated"
    assert set(body["provider"]) >= {"last_request_at", "last_ok", "last_error"}


def test_rejected_credentials_make_healthz_503_from_the_start(
    broker: LocalMosquitto, db_url: str, tmp_path: Path, twilio: FakeTwilio
) -> None:
    port = free_port()
    env = twilio_env(
        broker, db_url, tmp_path, twilio, port, VIGIE_TWILIO_AUTH_TOKEN="a-revoked-token"
    )
    server = ServerProcess(env, tmp_path / "server.log", port=port).start(wait_healthy=False)
    try:
        # The start-up check fetches the account: Twilio answers 401 / 20003.
        def rejected_with_broker_up() -> bool:
            body = server.health()[1]
            return bool(body.get("broker")) and body["provider"]["credentials_rejected"]

        wait_until(rejected_with_broker_up, 30, "credentials rejected, broker up")
        status, body = server.health()
        assert status == 503
        assert body["telephony"] == "twilio"
        assert body["database"] is True and body["broker"] is True  # only Twilio is wrong
        assert body["status"] == "degraded"
        assert body["provider"]["credentials_rejected"] is True
        assert body["provider"]["last_ok"] is False
        assert "20003" in body["provider"]["last_error"]
        assert twilio.sms == [] and twilio.calls == []
    finally:
        server.stop()


def test_transient_errors_keep_200_rejected_credentials_503_until_a_request_succeeds(
    broker: LocalMosquitto, db_url: str, tmp_path: Path, twilio: FakeTwilio
) -> None:
    port = free_port()
    env = twilio_env(broker, db_url, tmp_path, twilio, port)
    twilio.webhook_base = f"http://127.0.0.1:{port}"
    server = ServerProcess(env, tmp_path / "server.log", port=port).start()
    dev = Device("nurse-health", add_device(env, "nurse-health"), broker.port)
    others: list[Device] = []
    try:
        assert dev.connect()
        wait_until(lambda: provider(server)[1].get("last_ok") is True, 15, "credentials check")
        assert server.health()[1]["telephony"] == "twilio"

        # Twilio fails: twice 500, then once 429, then accepts (the engine retries at 1, 2, 4 s).
        twilio.inject("500", times=2, kind="sms")
        twilio.inject("429", times=1, kind="sms")
        dev.publish("alert", alert_payload(str(uuid.uuid4())))
        wait_until(lambda: "20500" in (provider(server)[1].get("last_error") or ""), 15, "the 500")
        assert provider(server)[0] == 200
        wait_until(lambda: "20429" in (provider(server)[1].get("last_error") or ""), 15, "the 429")
        assert provider(server)[0] == 200
        twilio.phones.expect_sms(NATIONAL, timeout=15)
        wait_until(lambda: provider(server)[1].get("last_ok") is True, 5, "accepted")
        assert provider(server)[0] == 200

        # The account's token is changed at Twilio: the next request is rejected → 503.
        # (Other devices: a second SOS from one device within the flood window joins its
        # running incident and makes no new request.)
        token = twilio.auth_token
        twilio.auth_token = "rotated-at-twilio"
        others.append(Device("nurse-health-2", add_device(env, "nurse-health-2"), broker.port))
        assert others[-1].connect()
        others[-1].publish("alert", alert_payload(str(uuid.uuid4())))
        wait_until(lambda: provider(server)[0] == 503, 120, "/healthz 503")
        assert provider(server)[1]["credentials_rejected"] is True
        # ...and stays 503 (no request since) until one succeeds again.
        twilio.auth_token = token
        assert provider(server)[0] == 503
        others.append(Device("nurse-health-3", add_device(env, "nurse-health-3"), broker.port))
        assert others[-1].connect()
        others[-1].publish("alert", alert_payload(str(uuid.uuid4())))
        wait_until(lambda: provider(server)[0] == 200, 120, "/healthz 200 again")
        assert provider(server)[1]["credentials_rejected"] is False
    finally:
        dev.close()
        for other in others:
            other.close()
        server.stop()
