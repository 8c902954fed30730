"""Fixtures for the chaos suite (marker ``chaos``; ``uv run pytest -m chaos`` runs it alone)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alert_server.localbroker import LocalMosquitto
from device_sim.geo import CommuneIndex
from tests.chaos.harness import ChaosStack, OwnPostgres
from tests.fakes.fake_twilio import FakeTwilio


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.chaos)


@pytest.fixture(scope="session")
def communes(geo_dir: Path) -> CommuneIndex:
    return CommuneIndex.load(geo_dir / "communes-index.csv")


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
def twilio() -> Iterator[FakeTwilio]:
    # An injected time-out holds the request 1.5 s, then drops the connection unanswered.
    fake = FakeTwilio().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    pg = OwnPostgres().init().start()
    try:
        yield pg
    finally:
        pg.destroy()


def make_stack(
    tmp_path: Path, broker: LocalMosquitto, db_url: str, twilio: FakeTwilio, geo_dir: Path
) -> ChaosStack:
    return ChaosStack(
        workdir=tmp_path, broker=broker, db_url=db_url, twilio=twilio, geo_dir=geo_dir
    )
