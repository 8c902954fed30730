"""Dispatch's own database entry: engine creation and migrations, without the alert server.

Why: dispatch must run and be tested on its own (``tests/dispatch/test_alone.py``). Its tables
are an Alembic branch of their own (``dispatch/migrations``, label ``dispatch``); here it is
applied alone. The alert server applies every branch at once (``alert_server.db.migrate``),
this one included, into the same version table: either order works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.config import Config
from sqlalchemy import Engine
from sqlmodel import SQLModel

from vigie import persistence
from vigie.persistence import NAMING_CONVENTION, run_migrations

SQLModel.metadata.naming_convention = NAMING_CONVENTION

ENV_DIR = Path(__file__).parent / "migration_env"
VERSIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Engine for ``url`` (SQLite with WAL and real transactions, or PostgreSQL)."""
    return persistence.make_engine(url, **kwargs)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(ENV_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(VERSIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Apply dispatch's migrations (its branch only). Safe when several servers start at once."""
    run_migrations(engine, alembic_config(engine), "dispatch@head")
