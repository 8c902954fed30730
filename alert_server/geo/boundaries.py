"""Reading and checking boundary GeoJSON (départements, communes). Pure: no database here.

A file is either accepted whole or refused with one line naming the file, the feature and what is
wrong, so that ``vigie geo import`` never half-replaces the routing data.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from vigie.departements import (
    departement_of_commune,
    is_commune_code,
    is_departement_code,
)

BoundaryKind = Literal["departements", "communes"]

# Above this relative area change, a "repaired" geometry is no longer the one that was drawn.
_REPAIR_MAX_AREA_CHANGE = 1e-6


class GeoDataError(ValueError):
    """A data file that cannot be imported. ``str(error)`` is one line, in French."""


@dataclass(frozen=True, slots=True, eq=False)
class Area:
    """One polygon of the map: a département or a commune."""

    code: str
    nom: str
    geometry: BaseGeometry  # Polygon or MultiPolygon, lon/lat WGS84, 2D

    @property
    def departement(self) -> str:
        return self.code if is_departement_code(self.code) else departement_of_commune(self.code)


@dataclass(frozen=True, slots=True, eq=False)
class BoundarySet:
    kind: BoundaryKind
    source: str  # file name, for the import log
    sha256: str
    areas: tuple[Area, ...]
    repaired: tuple[str, ...] = ()  # one French line per geometry that was repaired


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it is gzip (by magic number, not by name)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GeoDataError(f"{path}: lecture impossible ({exc.strerror or exc})") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise GeoDataError(f"{path}: archive gzip illisible ({exc})") from exc
    return raw


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_boundaries(path: Path, kind: BoundaryKind) -> BoundarySet:
    """Read and check a départements or communes FeatureCollection.

    Refused (``GeoDataError``, one line): unreadable or invalid JSON, not a FeatureCollection,
    no feature, a feature without a string ``code``/``nom``, a code that is not a département
    (resp. commune) code, a duplicate code, a missing, non-polygonal, empty or invalid geometry,
    coordinates outside the longitude/latitude range (a projected file, e.g. Lambert-93).
    """
    data = read_bytes(path)
    try:
        doc = json.loads(data)
    except UnicodeDecodeError as exc:
        raise GeoDataError(f"{path}: le fichier n'est pas en UTF-8 ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise GeoDataError(
            f"{path}:{exc.lineno}: JSON invalide (colonne {exc.colno} : {exc.msg})"
        ) from exc
    except RecursionError as exc:
        raise GeoDataError(f"{path}: JSON imbriqué trop profondément") from exc
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        raise GeoDataError(f"{path}: JSON invalide ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise GeoDataError(f"{path}: ce n'est pas une FeatureCollection GeoJSON")
    features = doc.get("features")
    if not isinstance(features, list):
        raise GeoDataError(f"{path}: champ « features » absent ou qui n'est pas une liste")
    if not features:
        raise GeoDataError(f"{path}: aucune entité (FeatureCollection vide)")

    label = "département" if kind == "departements" else "commune"
    codes: list[str] = []
    noms: list[str] = []
    geoms: list[BaseGeometry] = []
    seen: dict[str, int] = {}
    for i, feature in enumerate(features):
        where = f"{path}: entité features[{i}]"
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise GeoDataError(f"{where} : ce n'est pas une Feature GeoJSON")
        props = feature.get("properties")
        if not isinstance(props, dict):
            raise GeoDataError(f"{where} : « properties » absent (attendu « code » et « nom »)")
        code, nom = props.get("code"), props.get("nom")
        if not isinstance(code, str) or not code.strip():
            raise GeoDataError(f"{where} : propriété « code » absente ou qui n'est pas un texte")
        code = code.strip()
        where = f"{where} (code {code})"
        if not isinstance(nom, str) or not nom.strip():
            raise GeoDataError(f"{where} : propriété « nom » absente ou qui n'est pas un texte")
        valid_code = is_departement_code(code) if kind == "departements" else is_commune_code(code)
        if not valid_code:
            raise GeoDataError(f"{where} : propriété « code » : code de {label} inconnu")
        if kind == "communes" and not is_departement_code(departement_of_commune(code)):
            raise GeoDataError(f"{where} : propriété « code » : département inconnu")
        if code in seen:
            raise GeoDataError(f"{where} : code en double (déjà à l'entité features[{seen[code]}])")
        seen[code] = i
        geoms.append(_geometry(feature.get("geometry"), where))
        codes.append(code)
        noms.append(nom.strip())

    arr = np.array(geoms, dtype=object)
    _check_lonlat(arr, codes, path)
    repaired = _check_valid(arr, codes, path)
    areas = tuple(Area(c, n, g) for c, n, g in zip(codes, noms, arr, strict=True))
    return BoundarySet(
        kind=kind,
        source=path.name,
        sha256=file_sha256(path),
        areas=areas,
        repaired=tuple(repaired),
    )


def _geometry(obj: Any, where: str) -> BaseGeometry:
    if not isinstance(obj, dict):
        raise GeoDataError(f"{where} : géométrie absente")
    gtype = obj.get("type")
    if gtype not in ("Polygon", "MultiPolygon"):
        raise GeoDataError(
            f"{where} : géométrie de type « {gtype} » (attendu Polygon ou MultiPolygon)"
        )
    coords = obj.get("coordinates")
    if not isinstance(coords, list) or not coords:
        raise GeoDataError(f"{where} : géométrie vide (pas de coordonnées)")
    polygons = coords if gtype == "MultiPolygon" else [coords]
    try:
        for polygon in polygons:
            if not polygon:
                raise GeoDataError(f"{where} : géométrie invalide (polygone sans anneau)")
            for ring in polygon:
                # GeoJSON (RFC 7946 §3.1.6): a ring has at least 4 positions, first == last.
                # shapely would silently close an open ring; an open ring usually means a
                # truncated or hand-edited file, so it is refused.
                if len(ring) < 4 or ring[0] != ring[-1]:
                    raise GeoDataError(
                        f"{where} : géométrie invalide (anneau non fermé ou de moins de 4 points)"
                    )
        geom = shapely.geometry.shape(obj)
    except GeoDataError:
        raise
    except (
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        OverflowError,  # a coordinate written as an integer too large for a float
        shapely.errors.ShapelyError,
    ) as exc:
        raise GeoDataError(f"{where} : géométrie illisible ({exc})") from exc
    if geom.is_empty:
        raise GeoDataError(f"{where} : géométrie vide")
    if shapely.has_z(geom):
        geom = shapely.force_2d(geom)
    return geom


def _check_lonlat(arr: np.ndarray, codes: Sequence[str], path: Path) -> None:
    bounds = shapely.bounds(arr)  # (n, 4): minx, miny, maxx, maxy
    ok = (
        np.isfinite(bounds).all(axis=1)
        & (bounds[:, 0] >= -180.0)
        & (bounds[:, 2] <= 180.0)
        & (bounds[:, 1] >= -90.0)
        & (bounds[:, 3] <= 90.0)
    )
    if not ok.all():
        bad = np.flatnonzero(~ok)
        i = int(bad[0])
        x, y = bounds[i, 0], bounds[i, 1]
        raise GeoDataError(
            f"{path}: entité features[{i}] (code {codes[i]}) : coordonnées hors des bornes "
            f"longitude/latitude (x={x:.6g}, y={y:.6g}) : fichier projeté (Lambert-93 ?), "
            f"attendu WGS84 en degrés"
            + (f" ; {len(bad) - 1} autre(s) entité(s) dans ce cas" if len(bad) > 1 else "")
        )


def _check_valid(arr: np.ndarray, codes: Sequence[str], path: Path) -> list[str]:
    """Refuse invalid geometries, except a ring touching itself at one point.

    The real COG 2018 communes file has exactly one invalid polygon (14174 Condé-en-Normandie,
    "Ring Self-intersection": a hole drawn as an inward loop of the outer ring, the ESRI
    convention; france-geojson PR #40). Repairing that case with ``make_valid`` keeps the same
    area and the same covered points, so it is repaired and reported; any other invalidity
    (a crossing "bow-tie", a hole outside its shell…) would make point-in-polygon answers
    unreliable and is refused.
    """
    valid = shapely.is_valid(arr)
    repaired: list[str] = []
    for bad in np.flatnonzero(~valid):
        i = int(bad)
        geom = arr[i]
        reason = shapely.is_valid_reason(geom)
        where = f"{path}: entité features[{i}] (code {codes[i]})"
        if not str(reason).startswith("Ring Self-intersection"):
            raise GeoDataError(f"{where} : géométrie invalide ({reason})")
        fixed = _polygonal(shapely.make_valid(geom))
        area = geom.area
        if (
            fixed is None
            or area <= 0
            or math.fabs(fixed.area - area) / area > _REPAIR_MAX_AREA_CHANGE
            or not fixed.is_valid
        ):
            raise GeoDataError(f"{where} : géométrie invalide et non réparable ({reason})")
        arr[i] = fixed
        repaired.append(f"{where} : anneau qui se touche lui-même réparé ({reason})")
    return repaired


def _polygonal(geom: BaseGeometry) -> BaseGeometry | None:
    """Keep the polygons of ``make_valid``'s answer (it may add stray lines or points)."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [
        g
        for g in shapely.get_parts(geom)
        if g.geom_type in ("Polygon", "MultiPolygon") and not g.is_empty
    ]
    if not parts:
        return None
    merged = shapely.union_all(parts)
    return merged if merged.geom_type in ("Polygon", "MultiPolygon") else None
