"""The console against a REAL server process, a real Mosquitto and SQLite, driven by Debian's
Chromium through Playwright (never a downloaded browser)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from alert_server.users.cli import app as users_app
from tests.api.conftest import ApiStack, close_stack, make_stack
from tests.conftest import GEO_DIR
from tests.support import REPO, ServerProcess, server_env
from vigie.brokers.mosquitto import LocalMosquitto

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Lets the Web Audio alarm run without a click, so that the test exercises it.
    "--autoplay-policy=no-user-gesture-required",
]
ARTIFACTS = REPO / "test-artifacts"
PASSWORD = "console-password-2026"
SECRET = "dashboard-tests-secret-key-0123456789abcdef"


@dataclass
class RestartableServer(ServerProcess):
    """A server process that comes back on the same port (the browser keeps its URL).

    ``ServerProcess.start`` keeps a port once chosen and starts through ``vigie.launch`` (the
    process is killed when its readiness wait gives up, with a deadline measured on this
    machine)."""

    def start(self, wait_healthy: bool = True) -> RestartableServer:
        super().start(wait_healthy)
        return self


def add_user(env: dict[str, str], username: str, *args: str) -> None:
    result = CliRunner().invoke(
        users_app, ["add", username, "--password", PASSWORD, *args], env=env
    )
    assert result.exit_code == 0, result.output


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalMosquitto]:
    if not LocalMosquitto.available():
        pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
    b = LocalMosquitto(tmp_path / "broker").start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def console_env(broker: LocalMosquitto, tmp_path: Path) -> dict[str, str]:
    # Only the light outlines, which the server never imports for routing (importing the
    # full boundaries takes ~10 s per server start): the map draws them, the alerts stay
    # without département, and a national desk sees them. Scoping is tested in tests/api.
    geo_dir = tmp_path / "geo"
    geo_dir.mkdir()
    outlines = "departements-version-simplifiee-avec-outre-mer.geojson"
    (geo_dir / outlines).symlink_to(GEO_DIR / outlines)
    env = server_env(
        broker,
        f"sqlite:///{tmp_path / 'vigie.db'}",
        VIGIE_SECRET_KEY=SECRET,
        VIGIE_GEO_DIR=str(geo_dir),
    )
    add_user(env, "regulation", "--role", "dispatcher", "--all-departements")  # national desk
    add_user(env, "paris", "--role", "dispatcher", "--departements", "75")
    return env


@pytest.fixture
def console_server(console_env: dict[str, str], tmp_path: Path) -> Iterator[RestartableServer]:
    server = RestartableServer(console_env, tmp_path / "server.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def chromium(playwright_session: Any) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    browser = playwright_session.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    try:
        yield browser
    finally:
        browser.close()


@dataclass
class PageProblems:
    """Uncaught script errors and Content-Security-Policy violations seen by a page."""

    errors: list[str]

    def assert_none(self) -> None:
        assert self.errors == [], self.errors


@pytest.fixture
def page(chromium: Any) -> Iterator[tuple[Any, PageProblems]]:
    context = chromium.new_context(
        viewport={"width": 1440, "height": 900}, locale="fr-FR", timezone_id="Europe/Paris"
    )
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    problems = PageProblems([])
    pg.on("pageerror", lambda exc: problems.errors.append(f"pageerror: {exc}"))

    def on_console(msg: Any) -> None:
        text = msg.text
        if "Content Security Policy" in text or "Refused to" in text:
            problems.errors.append(f"csp: {text}")

    pg.on("console", on_console)
    try:
        yield pg, problems
    finally:
        context.close()


@functools.cache
def _axe_source() -> str:
    return (REPO / "tests" / "vendor" / "axe-core" / "axe.min.js").read_text(encoding="utf-8")


def assert_accessible(pg: Any, what: str) -> None:
    """axe-core (vendored from npm, injected here): no serious or critical violation.

    The page's own Content-Security-Policy refuses an injected script: its context must be
    made with ``bypass_csp=True``."""
    if not pg.evaluate("typeof window.axe !== 'undefined'"):
        pg.add_script_tag(content=_axe_source())
    result = pg.evaluate(
        """() => axe.run(document, {resultTypes: ['violations']}).then(r =>
            r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
             .map(v => v.id + ' (' + v.impact + '): ' +
                  v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(' | ')))"""
    )
    assert result == [], (what, result)


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


@contextmanager
def http_login(base_url: str, username: str, password: str = PASSWORD) -> Iterator[httpx.Client]:
    """A logged-in HTTP client for the console (login form with its anti-forgery token)."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        form = client.get("/dashboard/login")
        token = re.search(r'name="login_token" value="([^"]+)"', form.text)
        assert token is not None
        r = client.post(
            "/dashboard/login",
            data={"username": username, "password": password, "login_token": token.group(1)},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        yield client


@pytest.fixture
def console_app(tmp_path: Path) -> Iterator[ApiStack]:
    """The whole app in a uvicorn thread on SQLite (no broker): pages and stream, fast."""
    stack, server = make_stack(f"sqlite:///{tmp_path / 'vigie.db'}", tmp_path, geo_dir=GEO_DIR)
    try:
        yield stack
    finally:
        close_stack(stack, server)
