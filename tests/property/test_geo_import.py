"""``import_files`` (``vigie geo import``) against a database: a refused import changes nothing.

service.py: "A bad file raises GeoDataError before anything is written … the previous data stays
in place". A small valid data set is imported first; then bad imports are tried and the stored
rows are compared, byte for byte, with what was there before.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from alert_server.db import make_engine, migrate
from alert_server.geo.boundaries import GeoDataError
from alert_server.geo.models import GeoCommune, GeoDepartement, GeoImport, GeoZone
from alert_server.geo.service import data_version, import_files, load_index
from tests.property.common import fast
from tests.property.geodata import Mistake, Square, collections, dump, feature, mistakes

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

TABLES = [GeoDepartement, GeoCommune, GeoZone, GeoImport]
BASE = [Square("13", "Bouches-du-Rhône", 5.0, 43.5, 0.1), Square("84", "Vaucluse", 5.0, 43.6, 0.1)]


def _fc(features: list[dict[str, Any]]) -> str:
    return json.dumps({"type": "FeatureCollection", "features": features})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("geo")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, workdir: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path_factory.mktemp('geo-db') / 'vigie.db'}")
    migrate(eng)
    deps = workdir / "base-departements.geojson"
    deps.write_text(_fc([feature(s) for s in BASE]))
    communes = workdir / "base-communes.geojson"
    communes.write_text(
        _fc(
            [
                feature(Square("13001", "Aix-en-Provence", 5.0, 43.5, 0.05)),
                feature(Square("84001", "Althen", 5.0, 43.6, 0.1)),
            ]
        )
    )
    zones = workdir / "base-zones.csv"
    zones.write_text("code_commune;libelle_commune;institution\n13001;Aix;PN\n84001;Althen;GN\n")
    import_files(eng, departements=deps, communes=communes, zones=zones)
    try:
        yield eng
    finally:
        eng.dispose()


def _snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {
            m.__tablename__: sorted(  # type: ignore[attr-defined]
                tuple(r)
                for r in conn.execute(select(m.__table__)).all()  # type: ignore[attr-defined]
            )
            for m in TABLES
        }


BAD_ZONES = st.sampled_from(
    [
        "code_commune;institution\n13001;PM\n",
        "code_commune;institution\n20001;PN\n",
        "commune;force\n13001;PN\n",
        "",
        "code_commune;institution\n13001;PN\n13001;GN\n",
    ]
)


@fast(40)
@given(mistakes(), st.booleans())
def test_refused_departements_leave_the_stored_data(
    engine: Engine, workdir: Path, case: tuple[list[Square], Mistake], as_communes_too: bool
) -> None:
    """A départements file with one mistake is refused (GeoDataError) and every geo table, and
    the data version the servers poll, are exactly as before, also when it comes with a
    valid communes file in the same import."""
    _, (doc, _, _) = case
    bad = workdir / "departements.geojson"
    bad.write_bytes(dump(doc))
    communes = workdir / "communes.geojson"
    communes.write_text(_fc([feature(Square("13055", "Marseille", 5.3, 43.2, 0.1))]))
    before, version = _snapshot(engine), data_version(engine)
    with pytest.raises(GeoDataError):
        import_files(engine, departements=bad, communes=communes if as_communes_too else None)
    assert _snapshot(engine) == before and data_version(engine) == version


@fast(25)
@given(collections(), BAD_ZONES)
def test_a_bad_file_refuses_the_whole_import(
    engine: Engine,
    workdir: Path,
    case: tuple[list[Square], dict[str, Any]],
    zones_text: str,
) -> None:
    """Valid départements imported with a bad zone file in ONE import: nothing is written,
    not even the valid départements (all or nothing)."""
    _, doc = case
    deps = workdir / "new-departements.geojson"
    deps.write_bytes(dump(doc))
    zones = workdir / "zones.csv"
    zones.write_text(zones_text)
    before = _snapshot(engine)
    with pytest.raises(GeoDataError):
        import_files(engine, departements=deps, zones=zones)
    assert _snapshot(engine) == before


@fast(15)
@given(collections())
def test_valid_import_replaces_and_reloads(
    engine: Engine, workdir: Path, case: tuple[list[Square], dict[str, Any]]
) -> None:
    """A valid départements file replaces the stored ones (communes and zones untouched), bumps
    the data version, and the index rebuilt from the database puts each square's centre in
    its département."""
    squares, doc = case
    path = workdir / "valid-departements.geojson"
    path.write_bytes(dump(doc))
    before, version = _snapshot(engine), data_version(engine)
    summary = import_files(engine, departements=path)
    after = _snapshot(engine)
    assert summary.departements == len(squares)
    assert sorted(r[0] for r in after["geo_departement"]) == sorted(s.code for s in squares)
    assert after["geo_commune"] == before["geo_commune"]
    assert after["geo_zone"] == before["geo_zone"]
    assert data_version(engine) > version
    index = load_index(engine)
    assert index is not None
    for sq in squares:
        c = sq.size / 2
        assert index.departement_at(sq.lat + c, sq.lon + c) == sq.code
