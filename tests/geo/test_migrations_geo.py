"""The geo branch's migrations create exactly what the geo and referents models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, inspect
from sqlmodel import SQLModel

import alert_server.geo.models
import alert_server.referents.models  # noqa: F401  (registers the tables)

OURS = ("geo_", "referent_")


def _our_metadata() -> MetaData:
    md = MetaData(naming_convention=SQLModel.metadata.naming_convention)
    for name, table in SQLModel.metadata.tables.items():
        if name.startswith(OURS):
            table.to_metadata(md)
    return md


def test_models_match_migrations(engine: Engine) -> None:
    md = _our_metadata()
    assert set(md.tables) == {
        "geo_import",
        "geo_departement",
        "geo_commune",
        "geo_zone",
        "referent_directory",
    }
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                # Other packages' tables are not ours to compare.
                "include_name": lambda name, type_, parent: (
                    type_ != "table" or str(name).startswith(OURS)
                ),
            },
        )
        diff = compare_metadata(ctx, md)
    assert diff == []


def test_indexes_exist(engine: Engine) -> None:
    insp = inspect(engine)
    assert {i["name"] for i in insp.get_indexes("geo_commune")} == {"ix_geo_commune_departement"}
    assert {i["name"] for i in insp.get_indexes("geo_zone")} == {"ix_geo_zone_departement"}
