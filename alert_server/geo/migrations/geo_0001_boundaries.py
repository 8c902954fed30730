"""Geo: stored boundary imports (départements, communes as WKB) and police/gendarmerie zones.

Revision ID: geo_0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision: str = "geo_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("geo",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "geo_import",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", AutoString(length=16), nullable=False),
        sa.Column("source", AutoString(length=255), nullable=False),
        sa.Column("sha256", AutoString(length=64), nullable=False),
        sa.Column("feature_count", sa.Integer(), nullable=False),
        sa.Column("imported_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_geo_import")),
    )
    op.create_table(
        "geo_departement",
        sa.Column("code", AutoString(length=3), nullable=False),
        sa.Column("nom", AutoString(length=100), nullable=False),
        sa.Column("geom_wkb", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_geo_departement")),
    )
    op.create_table(
        "geo_commune",
        sa.Column("code", AutoString(length=5), nullable=False),
        sa.Column("nom", AutoString(length=100), nullable=False),
        sa.Column("departement", AutoString(length=3), nullable=False),
        sa.Column("geom_wkb", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_geo_commune")),
    )
    op.create_index(op.f("ix_geo_commune_departement"), "geo_commune", ["departement"])
    op.create_table(
        "geo_zone",
        sa.Column("code_commune", AutoString(length=5), nullable=False),
        sa.Column("libelle_commune", AutoString(length=100), nullable=False),
        sa.Column("institution", AutoString(length=2), nullable=False),
        sa.Column("departement", AutoString(length=3), nullable=False),
        sa.Column("id_service", AutoString(length=32), nullable=True),
        sa.Column("service", AutoString(length=200), nullable=True),
        sa.Column("code_postal", AutoString(length=10), nullable=True),
        sa.PrimaryKeyConstraint("code_commune", name=op.f("pk_geo_zone")),
    )
    op.create_index(op.f("ix_geo_zone_departement"), "geo_zone", ["departement"])


def downgrade() -> None:
    op.drop_index(op.f("ix_geo_zone_departement"), table_name="geo_zone")
    op.drop_table("geo_zone")
    op.drop_index(op.f("ix_geo_commune_departement"), table_name="geo_commune")
    op.drop_table("geo_commune")
    op.drop_table("geo_departement")
    op.drop_table("geo_import")
