"""Simulated telephony outside the demo is a permanent red banner on every console page; the
demo says "démonstration" discreetly; real telephony shows neither."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tests.api.conftest import ApiStack, close_stack, make_stack
from tests.dashboard.conftest import http_login

RED = "Téléphonie SIMULÉE : aucun SMS ni appel n'est envoyé"
DEMO = "Démonstration : téléphonie simulée"
PAGES = ("/dashboard/", "/dashboard/devices", "/dashboard/coverage", "/dashboard/stats")


@pytest.fixture
def console(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ApiStack]:
    settings: dict[str, Any] = request.param
    stack, server = make_stack(f"sqlite:///{tmp_path / 'vigie.db'}", tmp_path, **settings)
    try:
        yield stack
    finally:
        close_stack(stack, server)


def pages_seen(stack: ApiStack) -> dict[str, str]:
    password = stack.add_user("chef", role="admin")
    with httpx.Client(base_url=stack.url) as anonymous:
        seen = {"/dashboard/login": anonymous.get("/dashboard/login").text}
    with http_login(stack.url, "chef", password) as c:
        for path in (*PAGES, "/dashboard/audit", "/dashboard/alerts/unknown"):
            r = c.get(path)
            assert r.status_code in (200, 404), (path, r.status_code)
            seen[path] = r.text
    return seen


TWILIO = {
    "telephony": "twilio",
    "twilio_account_sid": "AC" + "0" * 32,
    "twilio_auth_token": SecretStr("a-real-looking-auth-token"),
    "twilio_from": "+33700000000",
    # Never called: these tests do not start the runtime (no send, no credentials check).
    "twilio_api_base": "http://127.0.0.1:9",
}


@pytest.mark.parametrize("console", [{"telephony": "simulated"}], indirect=True)
def test_simulated_telephony_is_a_red_banner_on_every_page(console: ApiStack) -> None:
    for path, html in pages_seen(console).items():
        assert 'class="banner banner-telephony"' in html, path
        assert RED in html, path
        assert DEMO not in html, path


@pytest.mark.parametrize("console", [{"telephony": "simulated", "demo": True}], indirect=True)
def test_the_demo_says_so_discreetly(console: ApiStack) -> None:
    for path, html in pages_seen(console).items():
        assert DEMO in html, path
        assert RED not in html and "banner-telephony" not in html, path


@pytest.mark.parametrize("console", [TWILIO], indirect=True)
def test_real_telephony_shows_no_banner(console: ApiStack) -> None:
    for path, html in pages_seen(console).items():
        assert 'id="telephony-banner"' not in html, path
        assert RED not in html and DEMO not in html, path
