"""Geo fixtures: the real data parsed once per session (parsing communes takes seconds)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from alert_server.geo.boundaries import BoundarySet, parse_boundaries
from alert_server.geo.index import GeoIndex
from alert_server.geo.service import import_files
from alert_server.geo.zones import ZoneSet, parse_zones

DEPS_FILE = "departements-avec-outre-mer.geojson"
COMMUNES_FILE = "communes-avec-outre-mer.geojson.gz"
ZONES_FILE = "zones-competence-EXEMPLE.csv"


@pytest.fixture(scope="session")
def departements_set(geo_dir: Path) -> BoundarySet:
    return parse_boundaries(geo_dir / DEPS_FILE, "departements")


@pytest.fixture(scope="session")
def communes_set(geo_dir: Path) -> BoundarySet:
    return parse_boundaries(geo_dir / COMMUNES_FILE, "communes")


@pytest.fixture(scope="session")
def zones_set(geo_dir: Path) -> ZoneSet:
    return parse_zones(geo_dir / ZONES_FILE)


@pytest.fixture(scope="session")
def france(
    departements_set: BoundarySet, communes_set: BoundarySet, zones_set: ZoneSet
) -> GeoIndex:
    """The whole map: 101 départements, 35,357 communes, the sample zone table."""
    return GeoIndex(departements_set.areas, communes_set.areas, zones_set.zones)


def square(lon: float, lat: float, size: float = 0.1) -> list[list[list[float]]]:
    """Polygon coordinates of a small square (lon/lat degrees), closed ring."""
    return [
        [
            [lon, lat],
            [lon + size, lat],
            [lon + size, lat + size],
            [lon, lat + size],
            [lon, lat],
        ]
    ]


def feature(code: Any, nom: Any, coords: Any, gtype: str = "Polygon") -> dict[str, Any]:
    return {
        "type": "Feature",
        "properties": {"code": code, "nom": nom},
        "geometry": {"type": gtype, "coordinates": coords},
    }


def write_fc(path: Path, features: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


@pytest.fixture
def small_geo(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A tiny valid data set: two départements (13, 84), three communes, a zone file."""
    deps = write_fc(
        tmp_path / "departements.geojson",
        [
            feature("13", "Bouches-du-Rhône", square(5.0, 43.5)),
            feature("84", "Vaucluse", square(5.0, 43.6)),
        ],
    )
    communes = write_fc(
        tmp_path / "communes.geojson",
        [
            feature("13001", "Aix-en-Provence", square(5.0, 43.5, 0.05)),
            feature("13002", "Allauch", square(5.05, 43.5, 0.05)),
            feature("84001", "Althen", square(5.0, 43.6, 0.1)),
        ],
    )
    zones = tmp_path / "zones.csv"
    zones.write_text(
        "code_commune;libelle_commune;institution;code_departement\n"
        "13001;Aix-en-Provence;PN;13\n13002;Allauch;GN;13\n84001;Althen;GN;84\n"
    )
    yield {"departements": deps, "communes": communes, "zones": zones}


def import_all(engine: Engine, files: dict[str, Path]) -> None:
    """Import the ``small_geo`` files (départements, communes, zones) in one call."""
    import_files(
        engine,
        departements=files["departements"],
        communes=files["communes"],
        zones=files["zones"],
    )
