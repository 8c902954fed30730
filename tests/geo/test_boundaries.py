"""Boundary import: every kind of bad file is refused with one clear line, nothing is replaced,
and the stored import reloads after a restart without the files."""

from __future__ import annotations

import gzip
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event

from alert_server.db import make_engine, migrate
from alert_server.geo import service
from alert_server.geo.boundaries import BoundarySet, GeoDataError, parse_boundaries
from alert_server.geo.service import (
    data_version,
    find_files,
    import_files,
    imported_kinds,
    load_from_dir,
    load_index,
    store,
)
from alert_server.geo.zones import ZoneSet
from tests.geo.conftest import feature, import_all, square, write_fc

BOWTIE = [[[5.0, 43.5], [5.1, 43.6], [5.1, 43.5], [5.0, 43.6], [5.0, 43.5]]]
# Marseille in Lambert-93 (EPSG:2154) metres: what an unconverted IGN shapefile export gives.
LAMBERT = [
    [
        [892000.0, 6247000.0],
        [895000.0, 6247000.0],
        [895000.0, 6250000.0],
        [892000.0, 6250000.0],
        [892000.0, 6247000.0],
    ]
]


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str, str]]:
    """name → (file, kind, text the one-line error must contain)."""
    ok13 = feature("13", "Bouches-du-Rhône", square(5.0, 43.5))
    out: dict[str, tuple[Path, str, str]] = {}

    def fc(name: str, feats: list[dict[str, Any]], kind: str, expect: str) -> None:
        out[name] = (write_fc(tmp / f"{name}.geojson", feats), kind, expect)

    p = tmp / "json.geojson"
    p.write_text('{"type": "FeatureCollection", "features": [\n  {"type": "Feature",,}')
    out["invalid_json"] = (p, "departements", "JSON invalide")
    p = tmp / "notfc.geojson"
    p.write_text(json.dumps({"type": "Feature", "geometry": None}))
    out["not_a_collection"] = (p, "departements", "FeatureCollection")
    fc("empty_collection", [], "departements", "FeatureCollection vide")
    fc(
        "invalid_geometry",
        [ok13, feature("84", "Vaucluse", BOWTIE)],
        "departements",
        "géométrie invalide (Self-intersection",
    )
    fc("empty_geometry", [feature("84", "Vaucluse", [])], "departements", "géométrie vide")
    fc(
        "null_geometry",
        [{"type": "Feature", "properties": {"code": "84", "nom": "V"}, "geometry": None}],
        "departements",
        "géométrie absente",
    )
    fc(
        "point_geometry",
        [feature("84", "Vaucluse", [5.0, 43.6], "Point")],
        "departements",
        "type « Point »",
    )
    open_ring = [[[5.0, 43.6], [5.1, 43.6], [5.1, 43.7], [5.0, 43.7]]]
    fc("open_ring", [feature("84", "Vaucluse", open_ring)], "departements", "anneau non fermé")
    fc(
        "duplicate_code",
        [ok13, feature("13", "Encore", square(6.0, 44.0))],
        "departements",
        "code en double",
    )
    fc(
        "projected",
        [ok13, feature("84", "Vaucluse", LAMBERT)],
        "departements",
        "hors des bornes longitude/latitude",
    )
    fc(
        "missing_code",
        [
            {
                "type": "Feature",
                "properties": {"nom": "X"},
                "geometry": {"type": "Polygon", "coordinates": square(5, 43)},
            }
        ],
        "departements",
        "« code » absente",
    )
    fc(
        "numeric_code",
        [feature(13, "Bouches-du-Rhône", square(5.0, 43.5))],
        "departements",
        "« code » absente ou qui n'est pas un texte",
    )
    fc("missing_nom", [feature("13", None, square(5.0, 43.5))], "departements", "« nom »")
    fc(
        "missing_properties",
        [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": square(5, 43)}}],
        "departements",
        "« properties » absent",
    )
    fc(
        "unknown_departement",
        [feature("20", "Corse", square(9.0, 42.0))],
        "departements",
        "code de département inconnu",
    )
    fc(
        "communes_as_departements",
        [feature("13055", "Marseille", square(5.3, 43.2))],
        "departements",
        "code de département inconnu",
    )
    fc(
        "duplicate_commune",
        [feature("13001", "A", square(5.0, 43.5)), feature("13001", "B", square(5.2, 43.5))],
        "communes",
        "code en double",
    )
    fc(
        "bad_commune_code",
        [feature("1300", "A", square(5.0, 43.5))],
        "communes",
        "code de commune inconnu",
    )
    p = tmp / "broken.geojson.gz"
    p.write_bytes(gzip.compress(b'{"type": "FeatureCollection"')[:20])
    out["broken_gzip"] = (p, "communes", "gzip")
    return out


BAD_NAMES = [
    "bad_commune_code",
    "broken_gzip",
    "communes_as_departements",
    "duplicate_code",
    "duplicate_commune",
    "empty_collection",
    "empty_geometry",
    "invalid_geometry",
    "invalid_json",
    "missing_code",
    "missing_nom",
    "missing_properties",
    "not_a_collection",
    "null_geometry",
    "numeric_code",
    "open_ring",
    "point_geometry",
    "projected",
    "unknown_departement",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_file_gives_one_clear_line(tmp_path: Path, name: str) -> None:
    path, kind, expect = _bad_files(tmp_path)[name]
    with pytest.raises(GeoDataError) as err:
        parse_boundaries(path, kind)  # type: ignore[arg-type]
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    assert expect in message, message


def test_every_bad_file_kind_is_listed(tmp_path: Path) -> None:
    assert sorted(_bad_files(tmp_path)) == BAD_NAMES


def test_error_names_the_feature(tmp_path: Path) -> None:
    path, kind, _ = _bad_files(tmp_path)["invalid_geometry"]
    with pytest.raises(GeoDataError, match=r"features\[1\] \(code 84\)"):
        parse_boundaries(path, kind)  # type: ignore[arg-type]


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path, kind, _ = _bad_files(tmp_path)["invalid_json"]
    with pytest.raises(GeoDataError, match=r"json\.geojson:2: JSON invalide"):
        parse_boundaries(path, kind)  # type: ignore[arg-type]


def test_gzip_and_plain_files_are_equivalent(tmp_path: Path, small_geo: dict[str, Path]) -> None:
    gz = tmp_path / "communes.geojson.gz"
    gz.write_bytes(gzip.compress(small_geo["communes"].read_bytes()))
    plain = parse_boundaries(small_geo["communes"], "communes")
    packed = parse_boundaries(gz, "communes")
    assert [a.code for a in plain.areas] == [a.code for a in packed.areas]
    assert all(
        a.geometry.equals(b.geometry) for a, b in zip(plain.areas, packed.areas, strict=True)
    )


def test_real_files_parse_with_the_one_known_repair(
    departements_set: BoundarySet, communes_set: BoundarySet
) -> None:
    assert len(departements_set.areas) == 101
    assert departements_set.repaired == ()
    assert len(communes_set.areas) == 35_357
    # Condé-en-Normandie's self-touching ring (france-geojson PR #40) is the only repair.
    assert len(communes_set.repaired) == 1 and "14174" in communes_set.repaired[0]
    conde = next(a for a in communes_set.areas if a.code == "14174")
    assert conde.geometry.is_valid


# -- database ----------------------------------------------------------------------------------


def _snapshot(engine: Engine) -> tuple[int, dict[str, int], str | None, str | None]:
    index = load_index(engine)
    assert index is not None
    kinds = {k: v.feature_count for k, v in imported_kinds(engine).items()}
    hit = index.commune_at(43.52, 5.02)
    return data_version(engine), kinds, index.departement_at(43.65, 5.05), hit.code if hit else None


def test_bad_files_leave_previous_data_in_place(
    engine: Engine, tmp_path: Path, small_geo: dict[str, Path]
) -> None:
    import_all(engine, small_geo)
    before = _snapshot(engine)
    assert before[1:] == ({"departements": 2, "communes": 3, "zones": 3}, "84", "13001")
    for name, (path, kind, expect) in _bad_files(tmp_path).items():
        with pytest.raises(GeoDataError, match=re.escape(expect)):
            if kind == "departements":
                import_files(engine, departements=path)
            else:
                import_files(engine, communes=path)
        assert _snapshot(engine) == before, name
    # A good file and a bad one together: neither is written.
    new_deps = write_fc(tmp_path / "d2.geojson", [feature("2A", "Corse-du-Sud", square(8.8, 41.9))])
    with pytest.raises(GeoDataError):
        import_files(engine, departements=new_deps, communes=_bad_files(tmp_path)["projected"][0])
    assert _snapshot(engine) == before


def test_import_is_one_transaction(
    engine: Engine, small_geo: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import_all(engine, small_geo)
    before = _snapshot(engine)

    def boom(*args: object, **kwargs: object) -> int:
        raise RuntimeError("panne au milieu de l'import")

    monkeypatch.setattr(service, "_replace_zones", boom)
    other = write_fc(tmp_path / "d3.geojson", [feature("2A", "Corse-du-Sud", square(8.8, 41.9))])
    with pytest.raises(RuntimeError):
        import_files(engine, departements=other, zones=small_geo["zones"])
    assert _snapshot(engine) == before


def test_restart_reloads_from_database_without_files(
    db_url: str,
    departements_set: BoundarySet,
    communes_set: BoundarySet,
    zones_set: ZoneSet,
    engine: Engine,
) -> None:
    summary = store(engine, departements=departements_set, communes=communes_set, zones=zones_set)
    assert (summary.departements, summary.communes, summary.zones) == (101, 35_357, 378)
    engine.dispose()
    # A new process: a new engine, no file given.
    fresh = make_engine(db_url)
    try:
        index = load_index(fresh)
        assert index is not None
        assert (index.departement_count, index.commune_count, index.zone_count) == (
            101,
            35_357,
            378,
        )
        hit = index.commune_at(48.0686, -0.7734)
        assert hit is not None and (hit.code, hit.nom, hit.departement) == ("53130", "Laval", "53")
        assert index.zone("53130") == "PN" and index.zone("53161") == "GN"
        assert index.departement_at(41.9192, 8.7386) == "2A"
    finally:
        fresh.dispose()


def test_load_from_dir_imports_once_and_prefers_full_outlines(
    engine: Engine, tmp_path: Path, small_geo: dict[str, Path]
) -> None:
    folder = tmp_path / "geo"
    folder.mkdir()
    (folder / "departements-avec-outre-mer.geojson").write_bytes(
        small_geo["departements"].read_bytes()
    )
    # The simplified outlines must never be chosen for routing, even if they sort first.
    write_fc(
        folder / "departements-version-simplifiee-avec-outre-mer.geojson",
        [feature("2A", "Corse-du-Sud", square(8.8, 41.9))],
    )
    with gzip.open(folder / "communes-avec-outre-mer.geojson.gz", "wb") as f:
        f.write(small_geo["communes"].read_bytes())
    (folder / "zones-competence.csv").write_bytes(small_geo["zones"].read_bytes())
    found = find_files(folder)
    assert found["departements"].name == "departements-avec-outre-mer.geojson"
    assert found["communes"].name == "communes-avec-outre-mer.geojson.gz"

    first = load_from_dir(engine, folder)
    assert (first.departements, first.communes, first.zones) == (2, 3, 3)
    version = data_version(engine)
    again = load_from_dir(engine, folder)
    assert again.empty and data_version(engine) == version


def test_find_files_in_shared_data(geo_dir: Path) -> None:
    found = find_files(geo_dir)
    assert found["departements"].name == "departements-avec-outre-mer.geojson"
    assert found["communes"].name == "communes-avec-outre-mer.geojson.gz"
    assert found["zones"].name == "zones-competence-EXEMPLE.csv"


def test_a_commit_between_the_check_and_the_replacement_does_not_fail_the_import(
    tmp_path: Path, small_geo: dict[str, Path]
) -> None:
    """At a server's first start the boundaries are imported (only the kinds missing) while
    the WAL checkpointer already runs, and it commits (it restarts the log). An import that
    began as a read and then wrote failed with "database is locked" when a commit fell
    between its check and its first write: SQLite cannot turn a read snapshot that another
    commit made stale into a write. The import now holds the write lock from its first
    statement, so that other writer waits its turn instead."""
    engine = make_engine(f"sqlite:///{tmp_path / 'vigie.db'}")
    migrate(engine)
    sets = {
        "departements": parse_boundaries(small_geo["departements"], "departements"),
        "communes": parse_boundaries(small_geo["communes"], "communes"),
    }
    other_writer: list[str] = []

    def commit_in_between(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("DELETE FROM geo_departement") and not other_writer:
            other = sqlite3.connect(tmp_path / "vigie.db", timeout=0)
            try:
                other.execute("PRAGMA user_version = 7")  # what the checkpointer's restart does
                other_writer.append("committed")
            except sqlite3.OperationalError as exc:
                other_writer.append(str(exc))
            finally:
                other.close()

    event.listen(engine, "before_cursor_execute", commit_in_between)
    try:
        summary = service.store(engine, **sets, only_if_missing=True)
    finally:
        event.remove(engine, "before_cursor_execute", commit_in_between)
        engine.dispose()
    assert (summary.departements, summary.communes) == (2, 3)
    assert other_writer == ["database is locked"]
