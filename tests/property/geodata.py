"""Tiny boundary FeatureCollections (squares on a grid) and single mistakes to put in them."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from vigie.departements import DEPARTEMENT_CODES

_DEPS = sorted(DEPARTEMENT_CODES)
LON0, LAT0, CELL = 2.0, 44.0, 0.5  # grid of 0.5° cells; squares stay inside their cell


@dataclass(frozen=True)
class Square:
    code: str
    nom: str
    lon: float  # south-west corner
    lat: float
    size: float

    def contains_strictly(self, lon: float, lat: float, margin: float) -> bool:
        return (
            self.lon + margin < lon < self.lon + self.size - margin
            and self.lat + margin < lat < self.lat + self.size - margin
        )


def ring(lon: float, lat: float, size: float, z: float | None = None) -> list[list[float]]:
    pts = [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]
    return [[*p, z] for p in pts] if z is not None else pts


def feature(sq: Square, *, multi: bool = False, z: float | None = None) -> dict[str, Any]:
    poly = [ring(sq.lon, sq.lat, sq.size, z)]
    geometry = (
        {"type": "MultiPolygon", "coordinates": [poly]}
        if multi
        else {"type": "Polygon", "coordinates": poly}
    )
    return {"type": "Feature", "properties": {"code": sq.code, "nom": sq.nom}, "geometry": geometry}


NOMS = st.text(st.characters(categories=["L", "N", "P", "Zs"]), min_size=1, max_size=20).filter(
    lambda s: bool(s.strip())
)


@st.composite
def square_sets(draw: st.DrawFn, max_size: int = 3) -> list[Square]:
    """1–``max_size`` départements, each a square in its own grid cell (never overlapping)."""
    n = draw(st.integers(1, max_size))
    codes = draw(st.lists(st.sampled_from(_DEPS), min_size=n, max_size=n, unique=True))
    cells = draw(
        st.lists(
            st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=n, max_size=n, unique=True
        )
    )
    out = []
    for code, (ix, iy) in zip(codes, cells, strict=True):
        size = draw(st.sampled_from([0.05, 0.1, 0.2, 0.3, 0.4]))
        out.append(Square(code, draw(NOMS), LON0 + ix * CELL, LAT0 + iy * CELL, size))
    return out


@st.composite
def collections(draw: st.DrawFn) -> tuple[list[Square], dict[str, Any]]:
    """A valid départements FeatureCollection (Polygon or MultiPolygon, 2D or 3D)."""
    squares = draw(square_sets())
    features = [
        feature(
            sq,
            multi=draw(st.booleans()),
            z=draw(st.none() | st.floats(-100, 4000)),
        )
        for sq in squares
    ]
    return squares, {"type": "FeatureCollection", "features": features}


# -- mistakes: (document or raw text, feature index or None, fragments the message must hold) --

Mistake = tuple[Any, int | None, tuple[str, ...]]


def _geom(doc: dict[str, Any], i: int) -> dict[str, Any]:
    geometry: dict[str, Any] = doc["features"][i]["geometry"]
    return geometry


def _first_ring(doc: dict[str, Any], i: int) -> list[Any]:
    g = _geom(doc, i)
    coords = g["coordinates"]
    first: list[Any] = coords[0][0] if g["type"] == "MultiPolygon" else coords[0]
    return first


def _as_polygon(doc: dict[str, Any], i: int) -> dict[str, Any]:
    g = _geom(doc, i)
    if g["type"] == "MultiPolygon":
        g["type"], g["coordinates"] = "Polygon", g["coordinates"][0]
    return g


@st.composite
def mistakes(draw: st.DrawFn) -> tuple[list[Square], Mistake]:
    """One mistake put in a valid collection, with what the refusal must say."""
    squares, doc = draw(collections())
    doc = copy.deepcopy(doc)
    n = len(squares)
    i = draw(st.integers(0, n - 1))
    f = doc["features"][i]
    kind = draw(
        st.sampled_from(
            [
                "truncated",
                "not_utf8",
                "not_fc",
                "features_not_list",
                "empty",
                "not_feature",
                "no_properties",
                "bad_code_value",
                "bad_nom_value",
                "unknown_code",
                "dup_code",
                "no_geometry",
                "bad_type",
                "open_ring",
                "short_ring",
                "nan",
                "infinite",
                "projected",
                "too_shallow",
                "too_deep",
                "null_point",
                "bowtie",
                "empty_coordinates",
                "no_ring",
            ]
        )
    )
    where = f"features[{i}]"
    if kind == "truncated":
        text = json.dumps(doc)
        return squares, (text[: draw(st.integers(0, len(text) - 1))], None, ("JSON invalide",))
    if kind == "not_utf8":
        raw = json.dumps(doc).encode().replace(b'"FeatureCollection"', b'"FeatureCollection\xe9"')
        return squares, (raw, None, ("UTF-8",))
    if kind == "not_fc":
        doc["type"] = draw(st.sampled_from(["Feature", "featurecollection", None, 1]))
        return squares, (doc, None, ("FeatureCollection",))
    if kind == "features_not_list":
        features_value: Any = draw(st.sampled_from([None, {}, "x", 3, "missing"]))
        if features_value == "missing":
            del doc["features"]
        else:
            doc["features"] = features_value
        return squares, (doc, None, ("« features »",))
    if kind == "empty":
        doc["features"] = []
        return squares, (doc, None, ("aucune entité",))
    if kind == "not_feature":
        doc["features"][i] = draw(st.sampled_from([5, [], "Feature", {**f, "type": "feature"}]))
        return squares, (doc, i, (where, "Feature"))
    if kind == "no_properties":
        if draw(st.booleans()):
            del f["properties"]
        else:
            f["properties"] = [f["properties"]]
        return squares, (doc, i, (where, "« properties »"))
    if kind in ("bad_code_value", "bad_nom_value"):
        key = "code" if kind == "bad_code_value" else "nom"
        prop_value: Any = draw(st.sampled_from([None, 13, "", "   ", ["13"], "missing"]))
        if prop_value == "missing":
            del f["properties"][key]
        else:
            f["properties"][key] = prop_value
        return squares, (doc, i, (where, f"« {key} »"))
    if kind == "unknown_code":
        f["properties"]["code"] = draw(st.sampled_from(["20", "00", "96", "2C", "13001", "975"]))
        return squares, (doc, i, (where, "code de département inconnu"))
    if kind == "dup_code":
        if n < 2:
            return squares, (doc | {"features": []}, None, ("aucune entité",))
        j = (i + 1) % n
        f["properties"]["code"] = squares[j].code
        return squares, (doc, max(i, j), (f"features[{max(i, j)}]", "en double"))
    if kind == "no_geometry":
        if draw(st.booleans()):
            del f["geometry"]
        else:
            f["geometry"] = None
        return squares, (doc, i, (where, "géométrie absente"))
    if kind == "bad_type":
        gtype = draw(
            st.sampled_from(["Point", "LineString", "GeometryCollection", "polygon", None])
        )
        f["geometry"]["type"] = gtype
        return squares, (doc, i, (where, "géométrie de type"))
    if kind == "open_ring":
        _first_ring(doc, i).pop()
        return squares, (doc, i, (where, "anneau non fermé"))
    if kind == "short_ring":
        r = _first_ring(doc, i)
        del r[1:-2]
        return squares, (doc, i, (where, "moins de 4 points"))
    if kind == "nan":
        r = _first_ring(doc, i)
        k = draw(st.integers(0, len(r) - 1))
        r[k][draw(st.integers(0, 1))] = float("nan")
        return squares, (doc, i, (where,))
    if kind == "infinite":
        r = _first_ring(doc, i)
        r[2][0] = draw(st.sampled_from([float("inf"), float("-inf"), 1e300]))
        return squares, (doc, i, (where, "hors des bornes"))
    if kind == "projected":
        g = _as_polygon(doc, i)
        g["coordinates"] = [[[x * 1e5 + 7e5, y * 1e5] for x, y, *_ in g["coordinates"][0]]]
        return squares, (doc, i, (where, "hors des bornes"))
    if kind == "too_shallow":
        g = _as_polygon(doc, i)
        g["coordinates"] = g["coordinates"][0]
        return squares, (doc, i, (where, "géométrie"))
    if kind == "too_deep":
        g = _as_polygon(doc, i)
        g["coordinates"] = [g["coordinates"]]
        return squares, (doc, i, (where, "géométrie"))
    if kind == "null_point":
        _first_ring(doc, i)[1] = draw(st.sampled_from([None, [], [None, None], "1,2", {}]))
        return squares, (doc, i, (where, "géométrie"))
    if kind == "bowtie":
        g = _as_polygon(doc, i)
        sq = squares[i]
        g["coordinates"] = [
            [
                [sq.lon, sq.lat],
                [sq.lon + sq.size, sq.lat + sq.size],
                [sq.lon + sq.size, sq.lat],
                [sq.lon, sq.lat + sq.size],
                [sq.lon, sq.lat],
            ]
        ]
        return squares, (doc, i, (where, "géométrie invalide"))
    if kind == "empty_coordinates":
        f["geometry"]["coordinates"] = draw(st.sampled_from([[], None, {}, "x"]))
        return squares, (doc, i, (where, "géométrie vide"))
    # no_ring: a polygon without rings inside a MultiPolygon
    f["geometry"] = {"type": "MultiPolygon", "coordinates": [[]]}
    return squares, (doc, i, (where, "géométrie invalide"))


def dump(doc: Any) -> bytes:
    """The file content: raw text/bytes as given, documents as JSON (NaN/Infinity allowed)."""
    if isinstance(doc, bytes):
        return doc
    if isinstance(doc, str):
        return doc.encode()
    return json.dumps(doc).encode()
