"""A real Mosquitto for the end-to-end visit test (the pattern of tests/integration)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vigie.brokers.mosquitto import LocalMosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalMosquitto]:
    if not LocalMosquitto.available():
        pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
    b = LocalMosquitto(tmp_path / "broker").start()
    try:
        yield b
    finally:
        b.stop()
