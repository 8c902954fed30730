"""Properties of the boundary reader (``alert_server/geo/boundaries.py::parse_boundaries``),
the checking half of ``vigie geo import``.

Contract (boundaries.py): "A file is either accepted whole or refused with one line naming the
file, the feature and what is wrong": ``GeoDataError`` and never another exception.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import shapely
from hypothesis import example, given
from hypothesis import strategies as st

from alert_server.geo.boundaries import BoundarySet, GeoDataError, parse_boundaries
from tests.property.common import JSON_VALUES, fast, server_recursion_limit
from tests.property.geodata import Mistake, Square, collections, dump, mistakes

# shapely warns (RuntimeWarning) while building a ring holding NaN; pytest turns warnings into
# errors, the server only logs them. The refusal itself is what is checked here.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def _read(path: Path, content: bytes, kind: Any = "departements") -> BoundarySet | GeoDataError:
    path.write_bytes(content)
    try:
        return parse_boundaries(path, kind)
    except GeoDataError as exc:
        return exc


@fast(40)
@given(collections())
def test_valid_collections_are_read_whole(
    tmp_path: Path, case: tuple[list[Square], dict[str, Any]]
) -> None:
    """A FeatureCollection of squares (Polygon or MultiPolygon, with or without z) is read
    whole: same codes and names (stripped) in order, 2D polygons covering the same squares,
    and the file's sha256."""
    squares, doc = case
    path = tmp_path / "departements.geojson"
    got = _read(path, dump(doc))
    assert isinstance(got, BoundarySet), got
    assert [a.code for a in got.areas] == [s.code for s in squares]
    assert [a.nom for a in got.areas] == [s.nom.strip() for s in squares]
    for area, sq in zip(got.areas, squares, strict=True):
        assert not shapely.has_z(area.geometry)
        box = shapely.box(sq.lon, sq.lat, sq.lon + sq.size, sq.lat + sq.size)
        assert area.geometry.symmetric_difference(box).area < 1e-12
        assert area.departement == sq.code
    assert got.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and not got.repaired


@fast(150)
@given(mistakes())
def test_each_mistake_is_refused_naming_the_feature(
    tmp_path: Path, case: tuple[list[Square], Mistake]
) -> None:
    """One mistake in a valid collection (not JSON, not UTF-8, not a FeatureCollection, no
    features, a feature without properties/code/nom, unknown or duplicate code, no geometry,
    wrong geometry type, open or short ring, NaN/infinite/projected coordinates, wrong
    nesting, bow-tie, empty coordinates) is refused with a GeoDataError naming the file, the
    feature ``features[i]`` when there is one, and what is wrong."""
    _, (doc, index, fragments) = case
    path = tmp_path / "departements.geojson"
    got = _read(path, dump(doc))
    assert isinstance(got, GeoDataError), "a file with a mistake was accepted"
    message = str(got)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    if index is not None:
        assert f"features[{index}]" in message


FEATUREISH = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["Feature", "feature"]) | JSON_VALUES,
        "properties": st.fixed_dictionaries(
            {},
            optional={
                "code": st.sampled_from(["13", "2A", "20"]) | JSON_VALUES,
                "nom": JSON_VALUES,
            },
        )
        | JSON_VALUES,
        "geometry": st.fixed_dictionaries(
            {},
            optional={
                "type": st.sampled_from(["Polygon", "MultiPolygon", "Point"]) | JSON_VALUES,
                "coordinates": JSON_VALUES,
            },
        )
        | JSON_VALUES,
    },
)
ANY_DOCS = st.fixed_dictionaries(
    {"type": st.just("FeatureCollection")},
    optional={"features": st.lists(FEATUREISH | JSON_VALUES, max_size=3) | JSON_VALUES},
)


@fast(120)
@given(ANY_DOCS | JSON_VALUES)
def test_any_json_document_is_read_or_refused(tmp_path: Path, doc: Any) -> None:
    """Any JSON document (FeatureCollection-shaped or not, with arbitrary values at every
    level) is read or refused with a one-line GeoDataError naming the file."""
    path = tmp_path / "departements.geojson"
    got = _read(path, json.dumps(doc).encode())
    if isinstance(got, GeoDataError):
        assert "\n" not in str(got) and str(path) in str(got)


@fast(80)
@given(st.binary(max_size=300))
@example(b"\x1f\x8b\x08\x00garbage")
@example(b"\xef\xbb\xbf{}")
def test_any_bytes_are_read_or_refused(tmp_path: Path, raw: bytes) -> None:
    """Arbitrary bytes (broken gzip, BOMs, binary) are refused with a GeoDataError."""
    got = _read(tmp_path / "departements.geojson", raw)
    assert isinstance(got, GeoDataError)


@fast(20)
@given(st.sampled_from(["features", "coordinates"]), st.integers(500, 5000))
@example("coordinates", 3000)
def test_deeply_nested_json_is_refused(tmp_path: Path, where: str, depth: int) -> None:
    """Regression: JSON nesting arrays a few thousand deep makes ``json.loads``
    raise RecursionError, which ``parse_boundaries`` does not catch (only UnicodeDecodeError and
    JSONDecodeError). Expected: GeoDataError "JSON invalide" (run under the server's default
    recursion limit)."""
    nested = "[" * depth + "]" * depth
    if where == "features":
        text = '{"type": "FeatureCollection", "features": ' + nested + "}"
    else:
        text = (
            '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": '
            '{"code": "13", "nom": "X"}, "geometry": {"type": "Polygon", "coordinates": '
            + nested
            + "}}]}"
        )
    with server_recursion_limit():
        got = _read(tmp_path / "departements.geojson", text.encode())
    assert isinstance(got, GeoDataError)


@fast(20)
@given(st.sampled_from(["int", "digits"]), st.integers(310, 6000))
@example("int", 400)
@example("digits", 5000)
def test_huge_integer_literals_are_refused(tmp_path: Path, how: str, digits: int) -> None:
    """Regression: an integer literal is refused with a GeoDataError naming the
    feature. Before the fix, ``1`` followed by 400 zeros as a coordinate made numpy raise
    OverflowError
    inside ``shapely.geometry.shape`` (``_geometry`` catches ValueError/TypeError/IndexError/
    KeyError/ShapelyError only), and an integer of more than 4300 digits anywhere makes
    ``json.loads`` raise a plain ValueError ("Exceeds the limit (4300 digits)…"), not the
    JSONDecodeError that ``parse_boundaries`` catches."""
    big = "1" + "0" * digits if how == "int" else "1" * digits
    text = (
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": '
        '{"code": "13", "nom": "X"}, "geometry": {"type": "Polygon", "coordinates": '
        "[[[5, 43], [" + big + ", 43], [5.1, 43.1], [5, 43]]]}}]}"
    )
    got = _read(tmp_path / "departements.geojson", text.encode())
    assert isinstance(got, GeoDataError)
    if digits <= 4300:
        assert "features[0]" in str(got)
