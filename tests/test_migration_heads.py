"""The Alembic-free "already migrated?" check agrees with Alembic, and never skips real work."""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from alert_server.db import VERSION_LOCATIONS, alembic_config, make_engine, migrate
from alert_server.migration_heads import at_heads, script_heads


def test_heads_read_from_the_files_are_alembics_heads(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'h.db'}")
    try:
        expected = set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())
    finally:
        engine.dispose()
    assert script_heads(VERSION_LOCATIONS) == expected


def test_a_database_behind_or_empty_is_not_current_and_migrate_catches_up(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        with engine.connect() as conn:
            assert not at_heads(conn, VERSION_LOCATIONS)  # never migrated
        migrate(engine)
        with engine.connect() as conn:
            assert at_heads(conn, VERSION_LOCATIONS)
        # One branch stepped back: the check must say so, and migrate must run Alembic again.
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_dispatch_inbound_from_phone_received"))
            conn.execute(
                text(
                    "UPDATE alembic_version SET version_num = 'dispatch_0005' "
                    "WHERE version_num = 'dispatch_0006'"
                )
            )
        with engine.connect() as conn:
            assert not at_heads(conn, VERSION_LOCATIONS)
        migrate(engine)
        with engine.connect() as conn:
            assert at_heads(conn, VERSION_LOCATIONS)
            names = {i["name"] for i in inspect(conn).get_indexes("dispatch_inbound")}
        assert "ix_dispatch_inbound_from_phone_received" in names
    finally:
        engine.dispose()


def test_an_unreadable_revision_means_unsure(tmp_path: Path) -> None:
    (tmp_path / "x_0001.py").write_text('revision = "x_0001"\ndown_revision = None\n')
    (tmp_path / "x_0002.py").write_text('revision = make()\ndown_revision = "x_0001"\n')
    assert script_heads([tmp_path]) is None
    (tmp_path / "x_0002.py").write_text('revision = "x_0002"\ndown_revision = "x_0001"\n')
    assert script_heads([tmp_path]) == {"x_0002"}
