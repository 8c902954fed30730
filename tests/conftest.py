"""Shared fixtures: databases (SQLite and a throw-away PostgreSQL database) and paths."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from alert_server.db import make_engine, migrate

REPO = Path(__file__).resolve().parent.parent
GEO_DIR = Path(os.environ.get("VIGIE_GEO_DIR", REPO.parent / "shared" / "geo")).resolve()
PG_ADMIN_DSN = os.environ.get("VIGIE_TEST_PG_DSN", "postgresql://127.0.0.1:5432/test")
# Tests never fetch map tiles from the internet (Plan IGN is the servers' default): the maps
# of in-process apps draw outlines; a test that wants tiles serves its own.
os.environ.setdefault("VIGIE_MAP_TILE_URL", "none")


# Run one at a time on one worker (pytest-xdist --dist loadgroup): each drives a fleet, several
# server processes or thousands of messages and would skew the timings of its neighbours.
_HEAVY = ("tests/chaos/", "tests/integration/test_fuzz_mqtt.py", "tests/device_sim/test_load.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.path).replace("\\", "/")
        if any(h in path for h in _HEAVY):
            item.add_marker(pytest.mark.xdist_group("heavy"))


@pytest.fixture(scope="session")
def geo_dir() -> Path:
    if not (GEO_DIR / "departements-avec-outre-mer.geojson").is_file():
        pytest.fail(f"boundary data not found in {GEO_DIR}: set VIGIE_GEO_DIR")
    return GEO_DIR


def _pg_url(dbname: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base}/{dbname}".replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; yields its SQLAlchemy URL."""
    name = f"vigie_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vigie.db'}"
    else:
        yield request.getfixturevalue("pg_database")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated database (every Alembic head applied)."""
    eng = make_engine(db_url)
    migrate(eng)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture(scope="session")
def playwright_session() -> Iterator[object]:
    """One Playwright driver per test process: the console and phone-app browser tests share
    it (two sync drivers alive in one process refuse to run: "Sync API inside the asyncio
    loop"), each launching its own Chromium from it."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p
