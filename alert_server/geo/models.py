"""Tables of the geo package: the stored boundary and zone imports (prefix ``geo_``).

Geometries are stored as WKB so that a server start rebuilds its index in well under a second
instead of re-parsing 46 MB of GeoJSON (see ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class GeoImport(SQLModel, table=True):
    """One accepted import of one kind of file; the newest id is the data's version."""

    __tablename__ = "geo_import"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)  # departements | communes | zones
    source: str = Field(max_length=255)  # file name as given
    sha256: str = Field(max_length=64)
    feature_count: int
    imported_at: datetime


class GeoDepartement(SQLModel, table=True):
    __tablename__ = "geo_departement"

    code: str = Field(primary_key=True, max_length=3)  # "01".."95", "2A", "2B", "971".."976"
    nom: str = Field(max_length=100)
    geom_wkb: bytes  # Polygon or MultiPolygon, lon/lat WGS84


class GeoCommune(SQLModel, table=True):
    __tablename__ = "geo_commune"

    code: str = Field(primary_key=True, max_length=5)  # INSEE code, e.g. "75056"
    nom: str = Field(max_length=100)
    departement: str = Field(max_length=3, index=True)
    geom_wkb: bytes


class GeoZone(SQLModel, table=True):
    """Police (PN) or gendarmerie (GN) zone of a commune."""

    __tablename__ = "geo_zone"

    code_commune: str = Field(primary_key=True, max_length=5)
    libelle_commune: str = Field(max_length=100)
    institution: str = Field(max_length=2)  # PN | GN
    departement: str = Field(max_length=3, index=True)
    id_service: str | None = Field(default=None, max_length=32)
    service: str | None = Field(default=None, max_length=200)
    code_postal: str | None = Field(default=None, max_length=10)
