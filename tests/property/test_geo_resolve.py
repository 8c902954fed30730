"""Properties of position resolution on a generated map (``geo/index.py``, ``geo/resolve.py``).

The map is a few square départements on a grid (``geodata.square_sets``), read by the real
boundary reader, so the index sees exactly what an import would store.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path

from hypothesis import assume, given
from hypothesis import strategies as st
from shapely.geometry import Polygon, box

from alert_server.geo.boundaries import Area, parse_boundaries
from alert_server.geo.index import M_PER_DEG, GeoIndex
from alert_server.geo.resolve import FRESH_FIX_S, resolve_position
from alert_server.geo.schemas import Fix, PositionInputs
from tests.property.common import NOW, fast
from tests.property.geodata import LAT0, LON0, Square, feature, square_sets

MARGIN = 0.02  # degrees (~1.6–2.2 km) kept from every edge: beyond the 1 km ambiguity radius


def _index(tmp_path: Path, squares: list[Square]) -> GeoIndex:
    path = tmp_path / "departements.geojson"
    fc = {"type": "FeatureCollection", "features": [feature(s) for s in squares]}
    path.write_text(json.dumps(fc))
    return GeoIndex(parse_boundaries(path, "departements").areas)


UNIT = st.floats(0, 1, exclude_min=True, exclude_max=True)


@fast(60)
@given(square_sets(), st.data())
def test_a_point_inside_a_square_resolves_to_its_code(
    tmp_path: Path, squares: list[Square], data: st.DataObject
) -> None:
    """A fresh GPS fix well inside a square (more than 1 km from its edges, squares ≥ 8 km
    apart) is in that département only: not ambiguous, not outside France, routed there."""
    index = _index(tmp_path, squares)
    sq = data.draw(st.sampled_from(squares))
    assume(sq.size > 2 * MARGIN + 0.01)
    u, v = data.draw(UNIT), data.draw(UNIT)
    lon = sq.lon + MARGIN + u * (sq.size - 2 * MARGIN)
    lat = sq.lat + MARGIN + v * (sq.size - 2 * MARGIN)
    assert index.departements_at(lat, lon) == (sq.code,)
    place = index.locate(lat, lon)
    assert place.departement == sq.code and place.departements == (sq.code,)
    assert place.inside and not place.ambiguous
    fix = Fix(lat, lon, acc_m=data.draw(st.none() | st.floats(1, 500)), measured_at=NOW)
    resolved = resolve_position(PositionInputs(fix=fix), now=NOW, index=index)
    assert resolved.departement == sq.code and resolved.departements == (sq.code,)
    assert resolved.source == "gps" and not resolved.flags


@fast(60)
@given(square_sets(), st.floats(-60, -30), st.floats(-170, -100))
def test_a_point_far_from_every_square_is_outside_france(
    tmp_path: Path, squares: list[Square], lat: float, lon: float
) -> None:
    """A fix thousands of km from every département is in none: no département to notify, the
    ``outside_france`` flag, the national fallback only."""
    index = _index(tmp_path, squares)
    assert index.departements_at(lat, lon) == ()
    resolved = resolve_position(PositionInputs(fix=Fix(lat, lon, None, NOW)), now=NOW, index=index)
    assert resolved.departement is None and resolved.departements == ()
    assert resolved.flags == {"outside_france"}


def _box(lon: float, lat: float, size: float) -> Polygon:
    return box(lon, lat, lon + size, lat + size)


@fast(40)
@given(st.floats(50, 5000), st.none() | st.floats(1, 5000), st.sampled_from([0.2, 0.4]))
def test_near_a_shared_border_both_sides_are_notified(
    tmp_path: Path, dist_m: float, acc_m: float | None, size: float
) -> None:
    """Two départements sharing an edge: a point ``d`` metres inside the western one is
    ambiguous (both notified, its own first) exactly when the uncertainty radius (the accuracy,
    at least 100 m; 1 km without one) reaches the border. 5 % of slack around the radius
    allows for the local metric approximation."""
    west = Area("13", "Ouest", _box(LON0, LAT0, size))
    east = Area("84", "Est", _box(LON0 + size, LAT0, size))
    index = GeoIndex([west, east])
    lat = LAT0 + size / 2
    lon = LON0 + size - dist_m / (M_PER_DEG * math.cos(math.radians(lat)))
    radius = max(acc_m, 100.0) if acc_m is not None else 1000.0
    assume(abs(dist_m - radius) > 0.05 * radius)
    place = index.locate(lat, lon, acc_m)
    assert place.departement == "13"
    if dist_m < radius:
        assert place.ambiguous and place.departements == ("13", "84")
    else:
        assert not place.ambiguous and place.departements == ("13",)


@fast(60)
@given(square_sets(), st.integers(0, 10**6))
def test_a_stale_fix_is_still_used_but_flagged(
    tmp_path: Path, squares: list[Square], extra_s: int
) -> None:
    """A fix older than the freshness limit is still routed where it is (better than nothing)
    but flagged ``stale_position``; the alert is never left without a département."""
    index = _index(tmp_path, squares)
    sq = squares[0]
    c = sq.size / 2
    old = NOW - timedelta(seconds=FRESH_FIX_S + 1 + extra_s)
    fix = Fix(sq.lat + c, sq.lon + c, 20.0, old)
    resolved = resolve_position(PositionInputs(fix=fix), now=NOW, index=index)
    assert resolved.departement == sq.code
    assert "stale_position" in resolved.flags and resolved.source == "last_known"
    assert resolved.age_s is not None and resolved.age_s > FRESH_FIX_S
