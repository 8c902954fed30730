from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServerProcess, server_env
from vigie.brokers.mosquitto import LocalMosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalMosquitto]:
    """A real Mosquitto from broker_config/, with the project's ACL and password files."""
    if not LocalMosquitto.available():
        pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
    b = LocalMosquitto(tmp_path / "broker").start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def env(broker: LocalMosquitto, db_url: str) -> dict[str, str]:
    return server_env(broker, db_url)


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[ServerProcess]:
    s = ServerProcess(env, tmp_path / "server.log").start()
    try:
        yield s
    finally:
        s.stop()
