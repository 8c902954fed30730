"""The spatial index against the real data: communes, borders, DROM, outside France."""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

import numpy as np
import pytest
import shapely

from alert_server.geo import ATTRIBUTION
from alert_server.geo.boundaries import BoundarySet
from alert_server.geo.index import AMBIGUITY_RADIUS_M, M_PER_DEG, GeoIndex, haversine_m


def _index_rows(geo_dir: Path) -> list[dict[str, str]]:
    with (geo_dir / "communes-index.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_attribution() -> None:
    assert ATTRIBUTION == "IGN – ADMIN EXPRESS COG 2018 / INSEE COG 2018"


def test_every_commune_interior_point(france: GeoIndex, geo_dir: Path) -> None:
    """All 35,357 interior points land in their département every time they are more than
    2 km inside it (closer ones may only be off by the outline's ~100 m accuracy).

    The commune is right for all but two points whose "interior point" in
    ``communes-index.csv`` lies just outside that commune's polygon of the GeoJSON (09042 by
    ~40 m, 67486 by ~250 m: the two files disagree, not the index); the index then answers the
    neighbouring commune the point is really in.
    """
    rows = _index_rows(geo_dir)
    assert len(rows) == 35_357
    communes = dict(zip(france._communes.codes, france._communes.geoms, strict=True))
    wrong_commune: list[str] = []
    wrong_dep_far: list[str] = []
    for row in rows:
        lat, lon = float(row["lat"]), float(row["lon"])
        hit = france.commune_at(lat, lon)
        if hit is None or hit.code != row["code_insee"]:
            wrong_commune.append(row["code_insee"])
            assert hit is not None and shapely.intersects_xy(communes[hit.code], lon, lat)
            assert _brute_force_distance_m(communes[row["code_insee"]], lat, lon) < 300
        if france.departement_at(lat, lon) != row["code_departement"]:
            distance = france.border_distance_m(lat, lon)
            if distance is None or distance > 2_000:
                wrong_dep_far.append(row["code_insee"])
    assert sorted(wrong_commune) == ["09042", "67486"]
    assert wrong_dep_far == []


def test_seeded_sample_locates_with_ambiguity_only_near_borders(
    france: GeoIndex, geo_dir: Path
) -> None:
    rows = random.Random(20261122).sample(_index_rows(geo_dir), 1500)
    for row in rows:
        lat, lon = float(row["lat"]), float(row["lon"])
        place = france.locate(lat, lon)
        assert place.commune is not None
        assert place.commune.code == row["code_insee"] or row["code_insee"] in ("09042", "67486")
        assert row["code_departement"] in place.departements
        distance = france.border_distance_m(lat, lon)
        assert distance is not None
        # Ambiguous exactly when another département is within 1 km (operations.md).
        assert place.ambiguous == (distance <= AMBIGUITY_RADIUS_M), (row, distance)
        if distance > 2_000:
            assert place.departements == (row["code_departement"],)


# (lat, lon, département, commune) — points checked by hand against the polygons, with their
# distance to the border (metres) noted to show why each is (not) ambiguous without accuracy.
BORDER_POINTS = [
    (43.745, 5.2368, "13", "13053", ("13", "84")),  # Mallemort, 273 m from the Durance border
    (43.750, 5.2368, "84", "84093", ("84", "13")),  # Puget, 283 m across the Durance
    (43.735, 5.2368, "13", "13024", ("13",)),  # Charleval, 1.4 km
    (43.760, 5.2368, "84", "84093", ("84",)),  # Puget, 1.4 km
    (43.8376, 5.0381, "84", "84035", ("84",)),  # Cavaillon, 1.3 km
    (48.8478, 2.2583, "75", "75056", ("75", "92")),  # Paris, Porte d'Auteuil, 500 m from 92
    (48.8239, 2.2700, "92", "92040", ("92", "75")),  # Issy-les-Moulineaux, 440 m from Paris
    (48.8566, 2.3522, "75", "75056", ("75",)),  # Paris, Hôtel de Ville
    (41.9192, 8.7386, "2A", "2A004", ("2A",)),  # Ajaccio
    (42.6977, 9.4508, "2B", "2B033", ("2B",)),  # Bastia
    (42.0786, 9.0620, "2A", "2A040", ("2A",)),  # Bocognano, 4.8 km from 2B
    (42.1266, 9.1338, "2B", "2B354", ("2B",)),  # Vivario (Vizzavona), 2.3 km from 2A
    (16.2411, -61.5331, "971", "97120", ("971",)),  # Pointe-à-Pitre
    (14.6161, -61.0588, "972", "97209", ("972",)),  # Fort-de-France
    (4.9224, -52.3135, "973", "97302", ("973",)),  # Cayenne
    (-20.8789, 55.4481, "974", "97411", ("974",)),  # Saint-Denis
    (-12.7806, 45.2278, "976", "97611", ("976",)),  # Mamoudzou
]


@pytest.mark.parametrize(("lat", "lon", "dep", "commune", "expected"), BORDER_POINTS)
def test_border_and_overseas_points(
    france: GeoIndex,
    lat: float,
    lon: float,
    dep: str,
    commune: str,
    expected: tuple[str, ...],
) -> None:
    place = france.locate(lat, lon)
    assert place.inside
    assert place.departement == dep
    assert place.commune is not None and place.commune.code == commune
    assert place.departements == expected
    assert place.ambiguous == (len(expected) > 1)


def test_corsica_border_within_one_km_is_ambiguous(france: GeoIndex) -> None:
    # Walk along the 2A/2B border and step 300 m into each side.
    deps = {code: geom for code, geom in zip(france._deps.codes, france._deps.geoms, strict=True)}
    border = shapely.intersection(deps["2A"].boundary, deps["2B"].boundary)
    assert border.length > 0.5  # degrees: the shared border is ~100 km long
    for t in (0.2, 0.4, 0.6, 0.8):
        p = shapely.line_interpolate_point(shapely.line_merge(border), t, normalized=True)
        place = france.locate(p.y, p.x)
        assert set(place.departements) == {"2A", "2B"}, (p, place)
        assert place.ambiguous


@pytest.mark.parametrize(
    ("lat", "lon", "what"),
    [
        (42.5, 5.0, "Méditerranée, 80 km au large"),
        (43.1, 5.3, "Méditerranée, 10 km au sud de Marseille"),
        (46.2044, 6.1432, "Genève"),
        (50.8503, 4.3517, "Bruxelles"),
        (40.4168, -3.7038, "Madrid"),
    ],
)
def test_sea_and_abroad_are_outside_france(
    france: GeoIndex, lat: float, lon: float, what: str
) -> None:
    place = france.locate(lat, lon)
    assert not place.inside, what
    assert place.departement is None and place.departements == ()
    assert place.commune is None


def test_wide_circle_from_geneva_reaches_france(france: GeoIndex) -> None:
    # Geneva is 4.3 km from the French border: a 10 km cell fix may be in France.
    place = france.locate(46.2044, 6.1432, 10_000)
    assert not place.inside
    assert set(place.departements) >= {"74", "01"}


def test_accuracy_circle_across_the_durance(france: GeoIndex) -> None:
    # Charleval (13) is 1.4 km from Vaucluse.
    assert france.locate(43.735, 5.2368, 2_000).departements == ("13", "84")
    assert france.locate(43.735, 5.2368, 500).departements == ("13",)
    assert france.locate(43.735, 5.2368).departements == ("13",)
    # A precise fix 273 m from the border: one département; a vague one: both.
    assert france.locate(43.745, 5.2368, 15).departements == ("13",)
    assert france.locate(43.745, 5.2368, 400).departements == ("13", "84")


def test_tiny_accuracy_never_below_map_tolerance(france: GeoIndex) -> None:
    # Find a point ~60 m inside 13 from the Durance border: the map itself is only ~100 m
    # accurate, so even a 5 m fix there is ambiguous.
    deps = {code: geom for code, geom in zip(france._deps.codes, france._deps.geoms, strict=True)}
    border = shapely.line_merge(shapely.intersection(deps["13"].boundary, deps["84"].boundary))
    p = shapely.line_interpolate_point(border, 0.5, normalized=True)
    for dlat in np.linspace(-0.003, 0.003, 61):
        lat = p.y + dlat
        if france.departement_at(lat, p.x) == "13":
            d = france.border_distance_m(lat, p.x)
            assert d is not None
            if 40 < d < 80:
                assert france.locate(lat, p.x, 5).departements == ("13", "84")
                return
    pytest.fail("no point 40–80 m from the border found")


def _brute_force_distance_m(geom: shapely.Geometry, lat: float, lon: float) -> float:
    kx, ky = M_PER_DEG * math.cos(math.radians(lat)), M_PER_DEG
    local = shapely.transform(geom, lambda c: (c - [lon, lat]) * [kx, ky])
    return float(shapely.distance(local, shapely.Point(0, 0)))


def test_border_distance_matches_a_whole_polygon_computation(france: GeoIndex) -> None:
    deps = {code: geom for code, geom in zip(france._deps.codes, france._deps.geoms, strict=True)}
    rng = random.Random(7)
    for _ in range(40):
        lat, lon = rng.uniform(43.4, 44.2), rng.uniform(4.6, 5.8)
        inside = france.departement_at(lat, lon)
        if inside is None:
            continue
        expected = min(
            _brute_force_distance_m(g, lat, lon) for code, g in deps.items() if code != inside
        )
        got = france.border_distance_m(lat, lon)
        assert got is not None and got == pytest.approx(expected, rel=1e-9, abs=1e-6)


@pytest.mark.parametrize("distance_m", [100.0, 1_000.0, 10_000.0])
@pytest.mark.parametrize("bearing", [0.0, 45.0, 90.0, 135.0])
def test_local_projection_accuracy(distance_m: float, bearing: float) -> None:
    """The equirectangular plane around the point against the great-circle distance."""
    lat0, lon0 = 46.5, 2.5
    b = math.radians(bearing)
    # Destination point on the sphere.
    d = distance_m / 6_371_008.8
    p1, l1 = math.radians(lat0), math.radians(lon0)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    l2 = l1 + math.atan2(
        math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2)
    )
    lat, lon = math.degrees(p2), math.degrees(l2)
    kx, ky = M_PER_DEG * math.cos(math.radians(lat0)), M_PER_DEG
    planar = math.hypot((lon - lon0) * kx, (lat - lat0) * ky)
    assert haversine_m(lat0, lon0, lat, lon) == pytest.approx(distance_m, rel=1e-9)
    # Well under 1 % at 1 km (0.02 %), 0.2 % at 10 km.
    limit = 2e-4 if distance_m <= 1_000 else 2e-3
    assert abs(planar - distance_m) / distance_m < limit


def test_invalid_coordinates_answer_nothing(france: GeoIndex) -> None:
    for lat, lon in [(float("nan"), 2.0), (95.0, 2.0), (45.0, 200.0)]:
        place = france.locate(lat, lon)
        assert place.departements == () and not place.inside
        assert france.border_distance_m(lat, lon) is None


def test_index_without_communes_still_routes(departements_set: BoundarySet) -> None:
    index = GeoIndex(departements_set.areas)
    place = index.locate(43.745, 5.2368)
    assert place.departements == ("13", "84") and place.commune is None


def test_just_off_the_coast_still_reaches_the_departement(france: GeoIndex) -> None:
    """300 m off Marseille's shore (a pier, a boat, or the outline's ~100 m error): outside
    every polygon, yet within 1 km of 13, so 13 is notified as well as flagged outside."""
    lat, lon = 43.27, 5.38
    while france.departement_at(lat, lon) == "13":
        lon -= 0.0005
    assert lon > 5.3, "Marseille's coast not found"
    offshore = lon - 300 / (111_195 * math.cos(math.radians(lat)))
    place = france.locate(lat, offshore)
    assert not place.inside
    assert place.departement == "13" and place.departements == ("13",)
    far = france.locate(lat, lon - 0.3)  # ~24 km out to sea
    assert not far.inside and far.departements == ()


def test_concurrent_lookups_agree(
    departements_set: BoundarySet, communes_set: BoundarySet, geo_dir: Path
) -> None:
    """A new index queried from 8 threads at once gives the same answers as one thread
    (GEOS builds each prepared polygon's index lazily; the server looks up from threads)."""
    from concurrent.futures import ThreadPoolExecutor

    rows = random.Random(3).sample(_index_rows(geo_dir), 4000)
    points = [(float(r["lat"]), float(r["lon"])) for r in rows]
    index = GeoIndex(departements_set.areas, communes_set.areas)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda p: index.commune_at(*p), points))
    assert answers == [index.commune_at(*p) for p in points]
