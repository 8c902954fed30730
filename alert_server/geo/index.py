"""In-memory spatial index: commune and département of a point, metric distances to borders.

Built once from the stored import (``service.load_index``) and then read-only, so one index can
serve every thread of the server.

* Point in polygon: shapely 2 ``STRtree`` on bounding boxes, then ``intersects_xy`` against
  prepared polygons. ``intersects`` (not ``contains``) so that a point exactly on a shared edge
  belongs to both sides rather than to neither.
* Distances: every département outline is cut into short pieces (``_CHUNK_VERTICES`` vertices)
  held in a second ``STRtree``. A distance query only projects the few pieces near the point
  into a local metric plane (equirectangular around the point: x = R·cos φ0·Δλ, y = R·Δφ), so
  it never touches a whole 10,000-vertex outline. The approximation error grows with distance:
  about 0.02 % at 1 km and 0.2 % at 10 km at French latitudes (checked against haversine in
  ``tests/geo/test_index.py``), far below the data's own ~100 m accuracy.

The distance from a point to a département it is not in equals its distance to that
département's outline, so "which départements does a circle touch" is: the ones containing the
centre, plus every one whose outline is within the radius.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely import STRtree

from alert_server.geo.boundaries import Area
from alert_server.geo.zones import Zone
from vigie.departements import departement_of_commune

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)
M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0

# operations.md: "a position … within 1 km of [a border] without an accuracy is ambiguous".
AMBIGUITY_RADIUS_M = 1000.0
# The boundary polygons are "accurate to ~100 m" (shared/geo/README.md: 25 %-simplified
# ADMIN EXPRESS). A very precise fix 30 m from a drawn border may really be on the other side,
# so the uncertainty circle is never taken smaller than the map's own error.
BOUNDARY_TOLERANCE_M = 100.0

_CHUNK_VERTICES = 16
# Expanding search radii for "nearest other département": doubling from 1 km keeps each step's
# box small (most points have a border within a few km); the DROM are ~120 km to 1,400 km
# from their nearest neighbour.
_NEAREST_SEARCH_RADII_M = tuple(1_000.0 * 2**k for k in range(12))  # 1 km … 2,048 km


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def valid_lat_lon(lat: float, lon: float) -> bool:
    return math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180


def _scales(lat0: float) -> tuple[float, float]:
    """Metres per degree of longitude and latitude around latitude ``lat0``."""
    return M_PER_DEG * math.cos(math.radians(lat0)), M_PER_DEG


def _box(lat: float, lon: float, radius_m: float) -> shapely.Geometry:
    """A lon/lat box that contains every point within ``radius_m`` of (lat, lon)."""
    dlat = radius_m / M_PER_DEG * 1.01
    # Longitude degrees shrink towards the poles: use the box's most poleward latitude.
    far_lat = min(89.0, abs(lat) + dlat)
    dlon = min(180.0, radius_m / (M_PER_DEG * math.cos(math.radians(far_lat))) * 1.01)
    return shapely.box(lon - dlon, lat - dlat, lon + dlon, lat + dlat)


def _to_local(geoms: np.ndarray, lat0: float, lon0: float) -> np.ndarray:
    kx, ky = _scales(lat0)
    origin = np.array([lon0, lat0])
    scale = np.array([kx, ky])
    return shapely.transform(geoms, lambda c: (c - origin) * scale)


@dataclass(frozen=True, slots=True)
class CommuneHit:
    code: str
    nom: str
    departement: str


@dataclass(frozen=True, slots=True)
class Place:
    """Where a point is, as far as the map can tell."""

    lat: float
    lon: float
    radius_m: float  # the uncertainty radius used for the ambiguity test
    departement: str | None  # the one to route to first
    departements: tuple[str, ...]  # every département to notify (first = ``departement``)
    commune: CommuneHit | None
    inside: bool  # the point itself lies in a département or commune polygon
    ambiguous: bool  # more than one département within the uncertainty radius


class _Layer:
    """One set of polygons with its tree (prepared for fast point-in-polygon)."""

    def __init__(self, areas: Sequence[Area]) -> None:
        self.codes = [a.code for a in areas]
        self.noms = [a.nom for a in areas]
        self.geoms = np.array([a.geometry for a in areas], dtype=object)
        shapely.prepare(self.geoms)
        self.tree = STRtree(self.geoms)
        # GEOS builds a prepared polygon's point-location index lazily, on its first query, and
        # that lazy step is not thread-safe; the server looks up from several threads. The
        # lock is held for the few microseconds of the point-in-polygon tests only.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.codes)

    def hits(self, lat: float, lon: float, point: shapely.Geometry | None = None) -> list[int]:
        """Indexes of the polygons containing the point (or with it on their edge), sorted.

        ``point``: the same point as a geometry, when the caller already made one (making a
        shapely point costs about as much as the tree query itself).
        """
        if not len(self.codes):
            return []
        candidates = self.tree.query(point if point is not None else shapely.Point(lon, lat))
        if not len(candidates):
            return []
        with self._lock:
            # One vectorised call for every candidate rather than one call each.
            inside = shapely.intersects_xy(self.geoms[candidates], lon, lat)
        return sorted(candidates[inside].tolist())


class _Outlines:
    """Département outlines cut into short pieces, for metric distance queries."""

    def __init__(self, geoms: Iterable[shapely.Geometry], owners: Iterable[str]) -> None:
        coords_list: list[np.ndarray] = []
        owner_list: list[str] = []
        for geom, owner in zip(geoms, owners, strict=True):
            for ring in shapely.get_rings(shapely.get_parts(geom)):
                c = shapely.get_coordinates(ring)
                for start in range(0, len(c) - 1, _CHUNK_VERTICES):
                    # Pieces overlap by one vertex so no segment is lost between two pieces.
                    coords_list.append(c[start : start + _CHUNK_VERTICES + 1])
                    owner_list.append(owner)
        self.owners = np.array(owner_list, dtype=object)
        if coords_list:
            # Every piece in one call (one call per piece was a tenth of the server's start).
            sizes = [len(c) for c in coords_list]
            self.pieces = shapely.linestrings(
                np.concatenate(coords_list), indices=np.repeat(np.arange(len(sizes)), sizes)
            )
        else:
            self.pieces = np.array([], dtype=object)
        self.tree = STRtree(self.pieces)

    def distances_m(
        self, lat: float, lon: float, radius_m: float, exclude: Iterable[str] = ()
    ) -> dict[str, float]:
        """Owner → metric distance of its outline, for outlines within ``radius_m``."""
        idx = self.tree.query(_box(lat, lon, radius_m))
        skip = set(exclude)
        if skip and len(idx):
            idx = idx[[owner not in skip for owner in self.owners[idx]]]
        if not len(idx):
            return {}
        local = _to_local(self.pieces[idx], lat, lon)
        dist = shapely.distance(local, shapely.Point(0.0, 0.0))
        best: dict[str, float] = {}
        for owner, d in zip(self.owners[idx], dist, strict=True):
            if d <= radius_m and d < best.get(owner, math.inf):
                best[owner] = float(d)
        return best


class GeoIndex:
    """Read-only answers about the map. Build it with ``service.load_index`` (or directly)."""

    def __init__(
        self,
        departements: Sequence[Area],
        communes: Sequence[Area] = (),
        zones: Iterable[Zone] = (),
        version: str = "",
    ) -> None:
        self.version = version
        self._deps = _Layer(departements)
        self._communes = _Layer(communes)
        self._commune_deps = [departement_of_commune(c) for c in self._communes.codes]
        self.departement_names: Mapping[str, str] = dict(
            zip(self._deps.codes, self._deps.noms, strict=True)
        )
        self._zones: dict[str, str] = {z.code_commune: z.institution for z in zones}
        if len(self._deps):
            self._outlines = _Outlines(self._deps.geoms, self._deps.codes)
        else:
            # Without département polygons, the communes' outlines carry the same borders
            # (a commune's own département's internal edges are harmless: see distances).
            self._outlines = _Outlines(self._communes.geoms, self._commune_deps)

    # -- what is loaded --------------------------------------------------------------------
    @property
    def departement_count(self) -> int:
        return len(self._deps)

    @property
    def commune_count(self) -> int:
        return len(self._communes)

    @property
    def zone_count(self) -> int:
        return len(self._zones)

    @property
    def empty(self) -> bool:
        return not len(self._deps) and not len(self._communes)

    # -- point in polygon ------------------------------------------------------------------
    def departements_at(
        self, lat: float, lon: float, point: shapely.Geometry | None = None
    ) -> tuple[str, ...]:
        """Département polygons containing the point (normally none or one)."""
        if not valid_lat_lon(lat, lon):
            return ()
        if len(self._deps):
            return tuple(self._deps.codes[i] for i in self._deps.hits(lat, lon, point))
        hit = self.commune_at(lat, lon, point)
        return (hit.departement,) if hit else ()

    def departement_at(self, lat: float, lon: float) -> str | None:
        found = self.departements_at(lat, lon)
        return found[0] if found else None

    def commune_at(
        self, lat: float, lon: float, point: shapely.Geometry | None = None
    ) -> CommuneHit | None:
        if not valid_lat_lon(lat, lon):
            return None
        hits = self._communes.hits(lat, lon, point)
        if not hits:
            return None
        i = hits[0]
        return CommuneHit(self._communes.codes[i], self._communes.noms[i], self._commune_deps[i])

    def zone(self, commune_code: str | None) -> str | None:
        """``PN`` or ``GN`` for a commune listed in the zone table, else None."""
        return self._zones.get(commune_code) if commune_code else None

    # -- drawing ---------------------------------------------------------------------------
    def communes_in_box(
        self, min_lon: float, min_lat: float, max_lon: float, max_lat: float
    ) -> list[tuple[str, str, shapely.Geometry]]:
        """(code, name, polygon) of every commune whose bounding box meets the box, by code:
        for drawing a map (the console's offline background), never for routing."""
        if not len(self._communes):
            return []
        found = self._communes.tree.query(shapely.box(min_lon, min_lat, max_lon, max_lat))
        layer = self._communes
        return [
            (layer.codes[i], layer.noms[i], layer.geoms[i])
            for i in sorted(found.tolist(), key=lambda i: layer.codes[i])
        ]

    # -- distances -------------------------------------------------------------------------
    def departements_touching(self, lat: float, lon: float, radius_m: float) -> tuple[str, ...]:
        """Every département that the circle (centre, ``radius_m`` metres) touches.

        The départements containing the centre come first, then the others by distance.
        """
        if not valid_lat_lon(lat, lon):
            return ()
        return self._touching(lat, lon, radius_m, self.departements_at(lat, lon))

    def _touching(
        self, lat: float, lon: float, radius_m: float, inside: tuple[str, ...]
    ) -> tuple[str, ...]:
        near = self._outlines.distances_m(lat, lon, max(0.0, radius_m), exclude=inside)
        others = sorted(near, key=lambda d: (near[d], d))
        return inside + tuple(others)

    def border_distance_m(self, lat: float, lon: float) -> float | None:
        """Metres to the nearest département border (the nearest other département).

        For a point outside every département (at sea, abroad): metres to the nearest
        département. A coastline is not a border. None when no other département is within
        2,000 km or the point is invalid.
        """
        if not valid_lat_lon(lat, lon):
            return None
        inside = self.departements_at(lat, lon)
        for radius in _NEAREST_SEARCH_RADII_M:
            near = self._outlines.distances_m(lat, lon, radius, exclude=inside)
            if near:
                return min(near.values())
        return None

    def nearest_commune_in(
        self, lat: float, lon: float, departement: str, radius_m: float
    ) -> CommuneHit | None:
        """The commune of ``departement`` nearest to the point, within ``radius_m``."""
        if not len(self._communes) or not valid_lat_lon(lat, lon):
            return None
        idx = [
            int(i)
            for i in self._communes.tree.query(_box(lat, lon, radius_m))
            if self._commune_deps[int(i)] == departement
        ]
        if not idx:
            return None
        local = _to_local(self._communes.geoms[idx], lat, lon)
        dist = shapely.distance(local, shapely.Point(0.0, 0.0))
        j = int(np.argmin(dist))
        if dist[j] > radius_m:
            return None
        i = idx[j]
        return CommuneHit(self._communes.codes[i], self._communes.noms[i], departement)

    # -- the question routing asks ---------------------------------------------------------
    def locate(self, lat: float, lon: float, acc_m: float | None = None) -> Place:
        """Commune and départements for a position with an optional accuracy radius.

        Ambiguous (operations.md) when the accuracy circle touches more than one département,
        or, without an accuracy, when another département lies within 1 km. The circle is
        never taken smaller than the map's own error (``BOUNDARY_TOLERANCE_M``).

        A point outside every polygon is ``inside=False`` (at sea or abroad). When its
        uncertainty circle still reaches French départements (a harbour, a beach, a fix just
        across the Swiss border with a wide accuracy), those départements are returned too:
        the person may well be on land in France, and a useless call costs less than a missed
        one. Far from France, ``departements`` is empty and only the national fallback is left.
        """
        radius = (
            max(float(acc_m), BOUNDARY_TOLERANCE_M)
            if acc_m is not None and math.isfinite(acc_m) and acc_m > 0
            else AMBIGUITY_RADIUS_M
        )
        if not valid_lat_lon(lat, lon):
            return Place(lat, lon, radius, None, (), None, False, False)
        point = shapely.Point(lon, lat)  # made once for both layers
        inside_deps = self.departements_at(lat, lon, point)
        touched = list(self._touching(lat, lon, radius, inside_deps))
        commune = self.commune_at(lat, lon, point)
        if commune is not None and commune.departement not in touched:
            # The commune and département layers disagree (they were simplified separately):
            # the point is at most ~100 m from a border, so both are notified.
            touched.insert(1 if inside_deps else 0, commune.departement)
        if inside_deps:
            primary: str | None = inside_deps[0]
        elif commune is not None:
            primary = commune.departement
        else:
            primary = touched[0] if touched else None
        if primary is not None and touched and touched[0] != primary:
            touched.remove(primary)
            touched.insert(0, primary)
        return Place(
            lat=lat,
            lon=lon,
            radius_m=radius,
            departement=primary,
            departements=tuple(touched),
            commune=commune,
            inside=bool(inside_deps) or commune is not None,
            ambiguous=len(touched) > 1,
        )
