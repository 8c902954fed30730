"""The address adapter: the national service's answer, cached; nothing when it is
unreachable or far away (the page then keeps the commune alone); an unsafe setting refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from alert_server.dashboard.geocode import BAN_REVERSE_URL, Geocoder, parse
from tests.fakes import ban
from tests.fakes.app_server import ThreadedServer
from vigie.brokers.mosquitto import free_port


@pytest.fixture(scope="module")
def fake_ban() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    app, calls = ban.make_app()
    server = ThreadedServer(app).start()
    try:
        yield server.url + "/reverse", calls
    finally:
        server.stop()


def test_address_from_the_service_and_cached(fake_ban: tuple[str, list[Any]]) -> None:
    url, calls = fake_ban
    geocoder = Geocoder(url)
    before = len(calls)
    found = geocoder.reverse(43.2965, 5.3698)
    assert found is not None and found.label == "2 Quai du Port 13002 Marseille"
    assert geocoder.reverse(43.296501, 5.369801) == found  # same place (~1 m): cached
    assert len(calls) == before + 1
    assert calls[-1]["index"] == "address" and calls[-1]["limit"] == 1
    assert geocoder.reverse(45.0, 1.0) is None  # nothing there


def test_unreachable_or_far_gives_no_address() -> None:
    dead = Geocoder(f"http://127.0.0.1:{free_port()}/reverse", timeout_s=1)
    assert dead.reverse(43.2965, 5.3698) is None
    assert dead.reverse(43.2965, 5.3698) is None
    assert dead.requests == 1  # a failure is remembered for a while, not retried each time
    far = {"features": [{"properties": {"label": "Lieu-dit", "distance": 900}}]}
    assert parse(far) is None
    assert parse({"oops": 1}) is None
    assert Geocoder(None).reverse(43.0, 5.0) is None


def test_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIGIE_GEOCODER_URL", raising=False)
    assert Geocoder.from_env().url == BAN_REVERSE_URL  # the national service by default
    monkeypatch.setenv("VIGIE_GEOCODER_URL", "none")
    assert Geocoder.from_env().url is None
    monkeypatch.setenv("VIGIE_GEOCODER_URL", "ftp://x")
    with pytest.raises(ValueError, match="VIGIE_GEOCODER_URL"):
        Geocoder.from_env()
