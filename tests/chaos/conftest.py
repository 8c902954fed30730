"""Fixtures for the chaos suite (marker ``chaos``; ``uv run pytest -m chaos`` runs it alone)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from device_sim.geo import CommuneIndex
from tests.chaos.harness import ChaosStack, OwnPostgres
from tests.fakes.fake_twilio import FakeTwilio
from tests.integration.conftest import broker  # noqa: F401  (a real Mosquitto)
from vigie.brokers.mosquitto import LocalMosquitto


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.chaos)


@pytest.fixture(scope="session")
def communes(geo_dir: Path) -> CommuneIndex:
    return CommuneIndex.load(geo_dir / "communes-index.csv")


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


@pytest.fixture
def new_stack(
    tmp_path: Path,
    broker: LocalMosquitto,  # noqa: F811  (the fixture imported above)
    twilio: FakeTwilio,
    geo_dir: Path,
) -> Iterator[Callable[..., ChaosStack]]:
    """``new_stack(db_url=None, servers=1, **env)``: a stack with its servers started (SQLite
    in the test's folder by default); every server is stopped at teardown."""
    stacks: list[ChaosStack] = []

    def make(db_url: str | None = None, servers: int = 1, **env: str) -> ChaosStack:
        stack = ChaosStack(
            workdir=tmp_path,
            broker=broker,
            db_url=db_url or f"sqlite:///{tmp_path / 'vigie.db'}",
            twilio=twilio,
            geo_dir=geo_dir,
        )
        stacks.append(stack)
        stack.start_servers(servers, **env)
        return stack

    yield make
    for stack in stacks:
        stack.stop()
